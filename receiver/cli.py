"""``rollback-receiver``: serve the receiver, check a policy file, or talk to a running one.

``serve`` and ``check-policy`` run locally; every other command calls a running receiver's
API (``--url``, admin token from ``RECEIVER_ADMIN_TOKEN``). Exit codes: 0 ok, 1 the
operation failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

# serve options -> Settings fields; each also read from its environment variable.
_SERVE_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--host", "host", {"help": "listen address (RECEIVER_HOST)"}),
    ("--port", "port", {"type": int, "help": "listen port (RECEIVER_PORT, 8080)"}),
    ("--webhook-token", "webhook_token", {"help": "Alertmanager bearer token"}),
    ("--admin-token", "admin_token", {"help": "API bearer token"}),
    ("--redis-url", "redis_url", {"help": "Redis URL; unset: embedded store"}),
    ("--policy-file", "policy_file", {"help": "policy YAML file"}),
    ("--prometheus-url", "prometheus_url", {"help": "Prometheus base URL"}),
    ("--dedup-ttl", "dedup_ttl_seconds", {"help": "dedup memory, e.g. 10m"}),
    ("--job-lease", "job_lease_seconds", {"help": "job and workload lease, e.g. 30s"}),
    ("--max-body-bytes", "max_body_bytes", {"type": int, "help": "request body limit"}),
    ("--key-prefix", "key_prefix", {"help": "Redis key prefix"}),
    ("--audit-retention", "audit_retention_seconds", {"help": "history kept, e.g. 30d"}),
    ("--log-format", "log_format", {"choices": ["json", "text"]}),
    ("--slack-channel", "slack_channel", {"help": "default Slack channel"}),
    ("--slack-api-url", "slack_api_url", {"help": "Slack Web API base URL"}),
]


def _settings_from(args: argparse.Namespace) -> Any:
    from receiver.settings import Settings

    overrides = {
        field: getattr(args, field)
        for _, field, _ in _SERVE_OPTIONS
        if getattr(args, field, None) is not None
    }
    if args.dry_run:
        overrides["dry_run"] = True
    if args.single_replica:
        overrides["single_replica"] = True
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from receiver.app import create_app
    from receiver.errors import ConfigError
    from receiver.logs import configure_logging

    try:
        settings = _settings_from(args)
    except ValidationError as e:
        for err in e.errors():
            name = ".".join(str(p) for p in err["loc"])
            env = "RECEIVER_" + name.upper().removesuffix("_SECONDS")
            print(f"rollback-receiver: setting {name} ({env}): {err['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format.value, settings.log_level)
    import logging

    log = logging.getLogger("receiver")
    if settings.embedded:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not settings.single_replica:
            print(
                "rollback-receiver: no RECEIVER_REDIS_URL inside a cluster: the embedded store "
                "is for a single replica only; set RECEIVER_REDIS_URL or pass --single-replica",
                file=sys.stderr,
            )
            return 2
        log.warning(
            "no RECEIVER_REDIS_URL: using the embedded in-process store, single replica only; "
            "dedup, queue and history are lost on restart"
        )
    try:
        app = create_app(settings)
    except ConfigError as e:
        print(f"rollback-receiver: {e}", file=sys.stderr)
        return 2
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    return 0


def _check_policy(args: argparse.Namespace) -> int:
    from receiver.policy import check_policy

    ok, message = check_policy(Path(args.file))
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """Call the running receiver; print a clear error and exit 1 when it fails."""
    import aiohttp

    token = os.environ.get("RECEIVER_ADMIN_TOKEN", "")
    if not token:
        print("rollback-receiver: set RECEIVER_ADMIN_TOKEN to call the API", file=sys.stderr)
        raise SystemExit(2)

    async def call() -> Any:
        timeout = aiohttp.ClientTimeout(total=args.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.request(
                method,
                args.url.rstrip("/") + path,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                text = await resp.text()
                try:
                    data = json.loads(text)
                except ValueError:
                    data = {"error": text[:200]}
                if resp.status >= 400:
                    msg = data.get("error", text[:200]) if isinstance(data, dict) else text[:200]
                    print(
                        f"rollback-receiver: {method} {path}: {resp.status}: {msg}", file=sys.stderr
                    )
                    raise SystemExit(1)
                return data

    try:
        return asyncio.run(call())
    except (aiohttp.ClientError, TimeoutError) as e:
        print(f"rollback-receiver: cannot reach {args.url}: {e}", file=sys.stderr)
        raise SystemExit(1) from e


def _history(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    params = {
        k: v
        for k, v in (
            ("model", args.model),
            ("state", args.state),
            ("since", args.since),
            ("limit", args.limit),
        )
        if v
    }
    data = _api(args, "GET", "/api/incidents?" + urlencode(params))
    if args.json:
        print(json.dumps(data, indent=2))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollback-receiver",
        description="Roll degraded model versions back on Kubernetes, driven by Alertmanager.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the webhook receiver, workers and API")
    for flag, field, kwargs in _SERVE_OPTIONS:
        serve.add_argument(flag, dest=field, default=None, **kwargs)
    serve.add_argument("--dry-run", action="store_true", help="decide and record, change nothing")
    serve.add_argument(
        "--single-replica",
        action="store_true",
        help="allow the embedded store inside a cluster (one replica only)",
    )
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-policy", help="validate a policy file and summarise it")
    check.add_argument("file")
    check.set_defaults(func=_check_policy)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--url",
            default=os.environ.get("RECEIVER_URL", "http://127.0.0.1:8080"),
            help="receiver base URL (RECEIVER_URL)",
        )
        p.add_argument("--timeout", type=float, default=10.0, help="seconds")
        return p

    history = client("history", "list incidents, newest first")
    history.add_argument("--model")
    history.add_argument("--state")
    history.add_argument("--since", help="RFC 3339 time or a duration such as 24h")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--json", action="store_true", help="print the API's JSON")
    history.set_defaults(func=_history)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rollback-receiver`` script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
