"""The README says only what the code does: every setting documented exists and every
setting is documented; every route in the API table is served and every route served is
documented; every CLI command is documented."""

from __future__ import annotations

import re
from pathlib import Path

from receiver.app import create_app
from receiver.cli import build_parser
from receiver.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def env_name(name: str) -> str:
    field = Settings.model_fields[name]
    return field.alias or (ENV_PREFIX + name).upper()


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    table = section("Settings")
    documented = set(re.findall(r"`((?:RECEIVER|SLACK)_[A-Z_]+|KUBECONFIG)`", table))
    settings = {env_name(name) for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from the README's table"
    assert documented - settings == set(), "the README documents settings that do not exist"


def documented_routes() -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for line in section("API").splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        last_method, last_path = "", ""
        for method, path in re.findall(r"`(?:(GET|POST) )?(/[^`?]*)", first):
            if not method:  # `, /resume`: the same method, the last segment replaced
                method = last_method
                path = last_path.rsplit("/", 1)[0] + path
            routes.add((method, path))
            last_method, last_path = method, path
    return routes


def served_routes() -> set[tuple[str, str]]:
    app = create_app(Settings(webhook_token="t", admin_token="a"))
    out: set[tuple[str, str]] = set()

    def walk(router) -> None:  # type: ignore[no-untyped-def]
        for resource in router.resources():
            sub = getattr(resource, "_app", None)
            if sub is not None:  # a sub-application's resources carry its prefix already
                walk(sub.router)
                continue
            for route in resource:
                if route.method in ("GET", "POST"):
                    out.add((route.method, resource.canonical))

    walk(app.router)
    return out


def test_every_route_in_the_api_table_is_served_and_every_served_route_is_documented() -> None:
    documented, served = documented_routes(), served_routes()
    assert documented - served == set(), "the README documents routes that are not served"
    assert served - documented == set(), "routes served but missing from the README's table"


def test_every_cli_command_is_documented() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    text = section("CLI")
    missing = [c for c in commands if f"rollback-receiver {c}" not in text]
    assert missing == []


def test_every_setting_but_a_secret_is_also_a_serve_option() -> None:
    # The README: "From the environment, each also a `serve` option" (secrets excepted).
    serve = next(a for a in build_parser()._actions if a.dest == "command").choices["serve"]
    options = {o for a in serve._actions for o in a.option_strings}
    secrets = {"webhook_token", "admin_token", "slack_bot_token", "slack_signing_secret",
               "slack_app_token"}  # fmt: skip
    missing = []
    for name in Settings.model_fields:
        if name in secrets:
            continue
        flag = "--" + env_name(name).removeprefix(ENV_PREFIX).lower().replace("_", "-")
        if flag not in options:
            missing.append(flag)
    assert missing == []
