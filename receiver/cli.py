"""``rollback-receiver``: serve the receiver, check a policy file, or talk to a running one.

``serve`` and ``check-policy`` run locally; every other command calls a running receiver's
API (``--url``, admin token from ``RECEIVER_ADMIN_TOKEN`` or the file named by
``RECEIVER_ADMIN_TOKEN_FILE``; never from argv, where other users of the machine and
shell histories would see it). Exit codes: 0 ok, 1 the operation failed, 2 bad usage or
configuration, 3 no admin token to call the API with.

Long because it is the whole command line: one small function per command, each a thin
caller of the API; the commands share the URL, token and exit-code handling at the top.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_TOKEN = 3

# Allocations between young-generation collections (CPython's default is 700). A delivery
# allocates a few thousand short-lived objects that reference counting frees; collecting
# every ~700 allocations cost several percent of the webhook's time for nothing.
GC_YOUNG_THRESHOLD = 50_000


class _Exit(Exception):
    """Leave the command with ``code`` after printing ``message`` to stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error(message: str) -> None:
    print(f"rollback-receiver: {message}", file=sys.stderr)


# -- serve --------------------------------------------------------------------------------


def serve_options() -> list[tuple[str, str, dict[str, Any]]]:
    """(flag, field, argparse keywords) for every setting but the secrets.

    Generated from the ``Settings`` fields so that a new setting is an option at once.
    Values stay strings here: the settings validate them, so a bad value is reported the
    same way from a flag or from the environment.
    """
    from enum import Enum

    from receiver.settings import Settings, env_name, is_secret

    out = []
    for name, field in Settings.model_fields.items():
        if is_secret(field):
            continue
        flag = "--" + name.removesuffix("_seconds").replace("_", "-")
        summary = (field.description or "").split(". ")[0].strip().rstrip(".").replace("``", "")
        kwargs: dict[str, Any] = {"help": f"{summary} ({env_name(name)})", "default": None}
        if field.annotation is bool:
            kwargs["action"] = "store_true"
        elif isinstance(field.annotation, type) and issubclass(field.annotation, Enum):
            kwargs["choices"] = [m.value for m in field.annotation]
        else:
            kwargs["metavar"] = name.removesuffix("_seconds").upper()
        out.append((flag, name, kwargs))
    return out


def _settings_from(args: argparse.Namespace) -> Any:
    from receiver.settings import Settings

    overrides = {
        field: getattr(args, field)
        for _, field, _ in serve_options()
        if getattr(args, field, None) is not None
    }
    return Settings(**overrides)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts, so a port in use fails first."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise _Exit(EXIT_USAGE, f"cannot listen on {host}:{port}: {e} (set RECEIVER_HOST)") from e
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise _Exit(
                EXIT_FAILED,
                f"cannot listen on {host}:{port}: address in use (set RECEIVER_PORT or --port)",
            ) from e
        raise _Exit(EXIT_FAILED, f"cannot listen on {host}:{port}: {e.strerror}") from e


async def _run_server(app: Any, sock: socket.socket) -> None:
    """Serve on ``sock`` until SIGTERM or SIGINT, then drain and clean up."""
    import logging

    from aiohttp import web

    log = logging.getLogger("receiver")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    _tune_gc()
    try:
        await web.SockSite(runner, sock).start()
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info("listening on http://%s:%d", shown, port)
        await stop.wait()
        log.info("stopping: finishing requests and jobs in flight")
    finally:
        await runner.cleanup()


def _tune_gc() -> None:
    """Keep the garbage collector off the request path of a long-running server.

    Everything made at start-up (modules, the Kubernetes client's models, the policy) lives
    as long as the process: frozen, full collections no longer walk it (one such walk
    paused every answer for over 100 ms under load). Young collections run less often.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _serve(args: argparse.Namespace) -> int:
    import logging

    from pydantic import ValidationError

    from receiver.app import create_app
    from receiver.errors import ConfigError
    from receiver.logs import configure_logging
    from receiver.settings import describe_errors

    try:
        settings = _settings_from(args)
    except ValidationError as e:
        for line in describe_errors(e):
            _error(line)
        return EXIT_USAGE
    except ConfigError as e:
        _error(str(e))
        return EXIT_USAGE
    configure_logging(settings.log_format.value, settings.log_level)
    log = logging.getLogger("receiver")
    if settings.embedded:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not settings.single_replica:
            _error(
                "no RECEIVER_REDIS_URL inside a cluster: the embedded store is for a single "
                "replica only; set RECEIVER_REDIS_URL or pass --single-replica"
            )
            return EXIT_USAGE
        log.warning(
            "no RECEIVER_REDIS_URL: using the embedded in-process store, single replica only; "
            "dedup, queue and history are lost on restart"
        )
    try:
        app = create_app(settings)
    except ConfigError as e:
        _error(str(e))
        return EXIT_USAGE
    sock = _bind(settings.host, settings.port)
    try:
        asyncio.run(_run_server(app, sock))
    finally:
        sock.close()
    return 0


def _check_policy(args: argparse.Namespace) -> int:
    from receiver.policy import check_policy

    ok, message = check_policy(Path(args.file))
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else EXIT_FAILED


# -- API clients --------------------------------------------------------------------------


def base_url(url: str) -> str:
    """The receiver's base URL; ``host:port`` without a scheme means ``http://host:port``."""
    from yarl import URL

    text = url.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parsed = URL(text)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _Exit(
            EXIT_USAGE,
            f"--url {url!r} is not a receiver URL: use http://HOST:PORT (or RECEIVER_URL)",
        )
    return text


def admin_token() -> str:
    """The admin token from ``RECEIVER_ADMIN_TOKEN`` or ``RECEIVER_ADMIN_TOKEN_FILE``, trimmed."""
    token = os.environ.get("RECEIVER_ADMIN_TOKEN", "").strip()
    path = os.environ.get("RECEIVER_ADMIN_TOKEN_FILE", "")
    if not token and path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise _Exit(
                EXIT_NO_TOKEN, f"RECEIVER_ADMIN_TOKEN_FILE={path}: cannot read the token ({e})"
            ) from e
    if not token:
        raise _Exit(
            EXIT_NO_TOKEN,
            "no admin token: set RECEIVER_ADMIN_TOKEN, or RECEIVER_ADMIN_TOKEN_FILE to a file"
            " holding it, to the receiver's admin token",
        )
    return token


def _api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """Call the running receiver; ``_Exit`` with a clear message when that fails."""
    import aiohttp

    base = base_url(args.url)
    token = admin_token()

    async def call() -> Any:
        timeout = aiohttp.ClientTimeout(total=args.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.request(
                method, base + path, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                text = await resp.text()
                try:
                    data = json.loads(text)
                except ValueError:
                    data = {"error": text[:200]}
                if resp.status >= 400:
                    msg = data.get("error", text[:200]) if isinstance(data, dict) else text[:200]
                    raise _Exit(EXIT_FAILED, f"{method} {path}: {resp.status}: {msg}")
                return data

    try:
        return asyncio.run(call())
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        reason = str(e) or type(e).__name__
        raise _Exit(
            EXIT_FAILED,
            f"cannot reach the receiver at {base} ({reason}): check --url (or RECEIVER_URL)"
            " and that the receiver is running",
        ) from e


def _history(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    params = {
        k: v
        for k, v in (
            ("model", args.model),
            ("state", args.state),
            ("since", args.since),
            ("limit", args.limit),
            ("cursor", args.cursor),
        )
        if v
    }
    data = _api(args, "GET", "/api/incidents?" + urlencode(params))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    if not data["items"]:
        print("no incidents match")
        return 0
    for item in data["items"]:
        times = item["times"]
        print(
            f"{item['id']}  {times.get('received') or '-':24}  {item['namespace']}/{item['model']}"
            f"  {item['bad_version']} -> {item.get('target_version') or '-'}"
            f"  {item['state']}  {item.get('reason') or ''}"
        )
    if data.get("next"):
        print(f"(more: --cursor {data['next']})")
    return 0


# -- control ------------------------------------------------------------------------------


def _model_path(value: str) -> str:
    """``NAMESPACE/MODEL`` as the API's path part, or a usage error saying the form."""
    namespace, sep, model = value.strip().partition("/")
    if not sep or not namespace or not model or "/" in model:
        raise _Exit(EXIT_USAGE, f"{value!r} is not NAMESPACE/MODEL (e.g. ml-prod/fraud-scorer)")
    return f"/api/models/{quote(namespace, safe='')}/{quote(model, safe='')}"


def _incident_path(value: str) -> str:
    return f"/api/incidents/{quote(value.strip(), safe='')}"


def _who(args: argparse.Namespace, **fields: Any) -> dict[str, Any]:
    """The request body: who acts (``--actor``, else the login name) and the fields set."""
    body: dict[str, Any] = {"actor": args.actor or _login()}
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no name
        return "cli"


def _target(args: argparse.Namespace, what: str) -> str | None:
    """The model argument, or None with ``--all``; exactly one of them."""
    if bool(args.model) == bool(getattr(args, "all", False)):
        raise _Exit(EXIT_USAGE, f"{what}: give NAMESPACE/MODEL or --all (one of them)")
    return args.model


def _pause(args: argparse.Namespace) -> int:
    model = _target(args, args.command)
    path = f"{_model_path(model)}/{args.command}" if model else f"/api/{args.command}"
    data = _api(args, "POST", path, _who(args, reason=args.reason))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    scope = model or "every model"
    state = "paused" if data["paused"] else "resumed"
    print(f"automation {state} for {scope} by {data['actor']} at {data['at']}")
    return 0


def _queued(args: argparse.Namespace, data: dict[str, Any], what: str) -> int:
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"{what} queued: incident {data['incident']}, job {data['job']}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    if bool(args.model) == bool(args.incident):
        raise _Exit(EXIT_USAGE, "rollback: give NAMESPACE/MODEL or --incident ID (one of them)")
    if args.incident:
        if args.to_revision is not None:
            raise _Exit(EXIT_USAGE, "--to-revision applies to a model, not to --incident")
        path = f"{_incident_path(args.incident)}/execute"
        return _queued(args, _api(args, "POST", path, _who(args, reason=args.reason)), "rollback")
    body = _who(args, reason=args.reason, to_revision=args.to_revision)
    data = _api(args, "POST", f"{_model_path(args.model)}/rollback", body)
    return _queued(args, data, "rollback")


def _roll_forward(args: argparse.Namespace) -> int:
    if bool(args.model) == bool(args.incident):
        raise _Exit(EXIT_USAGE, "roll-forward: give NAMESPACE/MODEL or --incident ID (one of them)")
    base = _incident_path(args.incident) if args.incident else _model_path(args.model)
    data = _api(args, "POST", f"{base}/roll-forward", _who(args, reason=args.reason))
    return _queued(args, data, "roll forward")


def _ack(args: argparse.Namespace) -> int:
    body = _who(args, root_cause=args.root_cause, note=args.note)
    data = _api(args, "POST", f"{_incident_path(args.incident)}/acknowledge", body)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    ack = data["acknowledgement"]
    print(f"{data['id']} ({data['state']}) acknowledged by {ack['actor']}: {ack['root_cause']}")
    return 0


def _drill(args: argparse.Namespace) -> int:
    if bool(args.model) == bool(args.all_enabled):
        raise _Exit(EXIT_USAGE, "drill: give NAMESPACE/MODEL or --all-enabled (one of them)")
    schedule = args.schedule or ("cron" if args.all_enabled else None)
    body = {"schedule": schedule} if schedule else _who(args)
    if args.model:
        return _queued(args, _api(args, "POST", f"{_model_path(args.model)}/drill", body), "drill")
    listing = _api(args, "GET", "/api/models")
    enabled = [m for m in listing["items"] if m.get("drills")]
    if not enabled:
        print("no model has drills: true in the policy: nothing to drill")
        return 0
    failed = 0
    results = []
    for m in enabled:
        model = f"{m['namespace']}/{m['name']}"
        cluster = m.get("cluster") or ""
        name = f"{cluster}/{model}" if cluster else model
        where = f"?cluster={quote(cluster, safe='')}" if cluster else ""
        try:
            data = _api(args, "POST", f"{_model_path(model)}/drill{where}", body)
        except _Exit as e:
            if e.code == EXIT_NO_TOKEN:
                raise
            failed += 1
            results.append({"model": name, "error": e.message})
            _error(f"drill of {name} not started: {e.message}")
            continue
        results.append({"model": name, **data})
        if not args.json:
            print(f"drill of {name} queued: incident {data['incident']}, job {data['job']}")
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_FAILED if failed else 0


def _stats(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    query = "?" + urlencode({"since": args.since}) if args.since else ""
    data = _api(args, "GET", "/api/stats" + query)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rollbacks = data["rollbacks"]
    print(f"since {data['since'] or 'the start of the retained history'}")
    print(f"rollbacks: {rollbacks['total']}")
    for key, label in (
        ("by_model", "model"),
        ("by_strategy", "strategy"),
        ("by_trigger", "trigger"),
        ("by_root_cause", "root cause"),
    ):
        for name, n in rollbacks[key].items():
            print(f"  {label:10} {name:40} {n}")
    for name, d in data["durations_seconds"].items():
        if d["count"]:
            print(
                f"{name.replace('_', ' ')}: p50 {d['p50']}s, p90 {d['p90']}s, max {d['max']}s"
                f" ({d['count']})"
            )
    drills = data["drills"]
    print(f"drills: {drills['total']} ({drills['passed']} passed, {drills['failed']} failed)")
    for name, at in drills["last_success"].items():
        print(f"  last passed  {name:40} {at}")
    return 0


def _models(args: argparse.Namespace) -> int:
    """``models``: each model with its readiness (the reasons under a model not ready)."""
    data = _api(args, "GET", "/api/models")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    pause = data.get("global")
    if pause and pause.get("paused"):
        print(f"automation paused globally by {pause.get('actor') or '?'}: {pause.get('reason')}")
    if not data["items"]:
        print("no model in the policy")
        return 0
    rows = [("MODEL", "STRATEGY", "MODE", "SERVING", "TARGET", "READY", "PAUSED", "CHECKED")]
    notes: list[list[str]] = [[]]
    for item in data["items"]:
        where = f"{item['namespace']}/{item['name']}"
        if item.get("cluster"):
            where += f" ({item['cluster']})"
        readiness = item["readiness"]
        ready = {"ready": "yes", "not_ready": "NO", "error": "NO?"}.get(
            readiness["result"], "unknown"
        )
        target = item.get("target")
        paused = item.get("pause")
        rows.append(
            (
                where,
                item["strategy"],
                item["mode"],
                item.get("serving_version") or "-",
                f"{target['version']} (rev {target['revision']})" if target else "-",
                ready,
                f"by {paused['actor'] or '?'}" if paused else "no" if item["paused"] else "-",
                readiness.get("checked_at") or "-",
            )
        )
        notes.append([f"    - {reason}" for reason in readiness["reasons"]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row, lines in zip(rows, notes, strict=True):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
        for line in lines:
            print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollback-receiver",
        description="Roll degraded model versions back on Kubernetes, driven by Alertmanager.",
        epilog="Exit codes: 0 ok, 1 failed, 2 bad usage or configuration, 3 no admin token.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the webhook receiver, workers and API",
        description="Every option is also an environment variable (shown in brackets). Tokens"
        " are read from the environment or from files only: RECEIVER_WEBHOOK_TOKEN (or"
        " RECEIVER_WEBHOOK_TOKEN_FILE), RECEIVER_ADMIN_TOKEN (or RECEIVER_ADMIN_TOKEN_FILE),"
        " SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN (each also *_FILE).",
    )
    for flag, field, kwargs in serve_options():
        serve.add_argument(flag, dest=field, **kwargs)
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-policy", help="validate a policy file and summarise it")
    check.add_argument("file")
    check.set_defaults(func=_check_policy)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. Calls a running receiver's"
            " API with the admin token from RECEIVER_ADMIN_TOKEN or RECEIVER_ADMIN_TOKEN_FILE.",
        )
        p.add_argument(
            "--url",
            default=os.environ.get("RECEIVER_URL", "http://127.0.0.1:8080"),
            help="receiver base URL, e.g. http://receiver:8080 (RECEIVER_URL)",
        )
        p.add_argument("--timeout", type=float, default=10.0, help="seconds")
        return p

    history = client("history", "list incidents, newest first")
    history.add_argument("--model", help="a model name, or NAMESPACE/MODEL")
    history.add_argument("--state")
    history.add_argument("--since", help="RFC 3339 time or a duration such as 24h")
    history.add_argument("--limit", type=int, default=50, help="incidents per page (1-500)")
    history.add_argument("--cursor", help="the next page, as printed after a full page")
    history.add_argument("--json", action="store_true", help="print the API's JSON")
    history.set_defaults(func=_history)

    def control(name: str, help_text: str) -> argparse.ArgumentParser:
        p = client(name, help_text)
        p.add_argument(
            "--actor",
            help="who acts, recorded as admin:<actor> (default: your login name)",
        )
        p.add_argument("--json", action="store_true", help="print the API's JSON")
        return p

    for name, verb in (("pause", "pause"), ("resume", "resume")):
        p = control(name, f"{verb} automation for a model, or every model with --all")
        p.add_argument("model", nargs="?", metavar="NAMESPACE/MODEL")
        p.add_argument("--all", action="store_true", help="every model (the global pause)")
        p.add_argument("--reason", help="why, shown in Slack and the audit log")
        p.set_defaults(func=_pause)

    rollback = control(
        "rollback",
        "roll a model back now (skips mode, guards and causality), or execute an incident's"
        " recommendation with --incident",
    )
    rollback.add_argument("model", nargs="?", metavar="NAMESPACE/MODEL")
    rollback.add_argument("--incident", help="execute this incident's recommended rollback")
    rollback.add_argument("--to-revision", type=int, help="this revision instead of rule 7's")
    rollback.add_argument("--reason")
    rollback.set_defaults(func=_rollback)

    forward = control(
        "roll-forward", "undo the last rollback of a model; its version is then accepted"
    )
    forward.add_argument("model", nargs="?", metavar="NAMESPACE/MODEL")
    forward.add_argument("--incident", help="the rollback of this incident (it must be the last)")
    forward.add_argument("--reason")
    forward.set_defaults(func=_roll_forward)

    from receiver.models import ROOT_CAUSES

    ack = control("ack", "acknowledge an incident with its root cause")
    ack.add_argument("incident", metavar="INCIDENT")
    ack.add_argument("--root-cause", required=True, choices=ROOT_CAUSES)
    ack.add_argument("--note")
    ack.set_defaults(func=_ack)

    drill = control(
        "drill",
        "roll a model back and forward again, both verified (models with drills: true)",
    )
    drill.add_argument("model", nargs="?", metavar="NAMESPACE/MODEL")
    drill.add_argument(
        "--all-enabled", action="store_true", help="every model whose policy says drills: true"
    )
    drill.add_argument(
        "--schedule",
        help="the schedule running it, recorded as drill:<schedule> (--all-enabled: cron)",
    )
    drill.set_defaults(func=_drill)

    stats = client("stats", "rollback frequency, durations, root causes and drills")
    stats.add_argument("--since", help="RFC 3339 time or a duration such as 30d")
    stats.add_argument("--json", action="store_true", help="print the API's JSON")
    stats.set_defaults(func=_stats)

    models = client("models", "list the models with their rollback readiness")
    models.add_argument("--json", action="store_true", help="print the API's JSON")
    models.set_defaults(func=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rollback-receiver`` script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except _Exit as e:
        _error(e.message)
        return e.code
