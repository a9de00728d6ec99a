"""Webhook ingest: the receiver as deployed against a bare aiohttp handler, driven by ``wrk``.

    python benchmarks/webhook_ingest.py [--quick] [--duration S] [--rounds N]
                                        [--connections C] [--threads T] [--profile FILE]

Three servers, each in its own process, measured one after the other with the same client:

- bare: ``benchmarks/_serve.py bare``, an aiohttp handler that runs ``await request.json()``
  and answers 200, nothing else;
- floor: ``benchmarks/_serve.py floor``, what the design asks of every delivery and nothing
  else, with the product's own code for each step (token, validation, dedup key and job
  JSON, the Redis store's group-committed ingest script, the per-alert answer);
- receiver: ``python -m receiver serve`` as deployed: workers running, ``deploy/policy.yaml``
  loaded, real Redis (``BENCH_REDIS_URL``), JSON logs at INFO to a file. A fresh receiver
  (and Redis key prefix) for every measured run.

The client is ``wrk`` (Debian package), ``--connections`` keep-alive connections (32),
``--latency`` for the percentiles. Two paths, with the captured ``firing_single.json``:

- accepted: a Lua script gives every request a fingerprint of its own, so every alert is
  new (SET NX + XADD) and becomes a job the workers take;
- duplicate: the identical body every time, so every alert after the first is a duplicate.

Each measured run follows a 2 s warm-up on the same server. Runs alternate bare, floor and
receiver, ``--rounds`` times per path; the summary gives the medians and the ratio of the
medians. Each run also reports the server's CPU time per request (``/proc/<pid>/stat``), a
figure a busy neighbour on the machine disturbs far less than throughput.
Design target: receiver >= 0.8 x bare, p99 < 15 ms, on both paths. ``--profile FILE``
samples the receiver with ``py-spy`` (``pip install py-spy``) during one more run of each
path and writes where its time went to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from _common import (
    ADMIN_TOKEN,
    AM_FIXTURES,
    REDIS_URL,
    ROOT,
    WEBHOOK_TOKEN,
    delete_prefix,
    new_prefix,
    print_facts,
    running,
    wait_ready,
)

TARGET_RATIO = 0.8
TARGET_P99_MS = 15.0
WARMUP_SECONDS = 2
PATHS = ("accepted", "duplicate")

# Every request a new alert: the captured body with a fingerprint of its own per request.
FRESH_LUA = """
local counter, tid, tag, body = 0, 0, "", nil
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  tid = tonumber(wrk.thread:get("tid")) or 0
  tag = args[2]
  local f = io.open(args[1], "rb")
  body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[3]
end
function request()
  counter = counter + 1
  local fp = string.format("%s%02x%011x", tag, tid, counter)
  local fresh = body:gsub('"fingerprint":"[0-9a-f]+"', '"fingerprint":"' .. fp .. '"', 1)
  return wrk.format(nil, nil, nil, fresh)
end
"""

# The identical body every time.
SAME_LUA = """
function init(args)
  local f = io.open(args[1], "rb")
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[3]
end
"""


@dataclass
class Run:
    """One wrk run: throughput and latency percentiles in ms."""

    server: str
    path: str
    rate: float
    p50: float
    p90: float
    p99: float
    requests: int
    notes: str = ""
    cpu_us: float = 0.0  # the server's CPU time per request, microseconds


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str, server: str, path: str) -> Run:
    """Requests/sec and the --latency percentiles; refuses runs with errors or non-2xx."""
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        raise SystemExit(f"{server}/{path}: {m.group(1)} non-2xx answers\n{output}")
    if "Socket errors" in output:
        raise SystemExit(f"{server}/{path}: socket errors\n{output}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+(?:us|ms|s))\s*$", output, re.M))
    if rate is None or total is None or len(pct) != 4:
        raise SystemExit(f"{server}/{path}: cannot read wrk's output\n{output}")

    def at(q: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", pct[q])
        assert m is not None
        return _ms(m.group(1), m.group(2))

    return Run(
        server, path, float(rate.group(1)), at("50"), at("90"), at("99"), int(total.group(1))
    )


def wrk(
    url: str, script: Path, body: Path, tag: str, seconds: int, connections: int, threads: int
) -> str:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        f"{url}/webhook/alertmanager",
        "--",
        str(body),
        tag,
        WEBHOOK_TOKEN,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/<pid>/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Receiver:
    url: str
    pid: int
    prefix: str
    log: Path


@contextlib.contextmanager
def deployed_receiver(workdir: Path) -> Iterator[Receiver]:
    """``python -m receiver serve`` with workers, the shipped policy and real Redis."""
    prefix = new_prefix()
    port = free_port()
    log = workdir / f"receiver-{prefix.split(':')[1]}.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "SLACK_"))},
        "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECEIVER_REDIS_URL": REDIS_URL,
        "RECEIVER_KEY_PREFIX": prefix,
        "RECEIVER_POLICY_FILE": str(ROOT / "deploy" / "policy.yaml"),
        "RECEIVER_HOST": "127.0.0.1",
        "RECEIVER_PORT": str(port),
        "RECEIVER_LOG_FORMAT": "json",
    }
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "serve"], stderr=out, env=env, cwd=str(ROOT)
        )
    try:
        asyncio.run(_wait_ready(url, proc))
        yield Receiver(url, proc.pid, prefix, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        delete_prefix(prefix)


async def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the receiver exited with {proc.returncode} at start")
            try:
                await wait_ready(session, url, timeout=1.0)
                return
            except (RuntimeError, aiohttp.ClientError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def counters(url: str) -> dict[str, float]:
    """What the receiver counted: alerts by outcome, jobs done, queue depth."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for m in re.finditer(r'^receiver_alerts_total\{outcome="(\w+)"\} (\S+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    if m := re.search(r'^receiver_jobs_total\{result="done"\} (\S+)$', text, re.M):
        out["jobs done"] = float(m.group(1))
    if m := re.search(r"^receiver_queue_depth (\S+)$", text, re.M):
        out["queue depth"] = float(m.group(1))
    return out


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.body = AM_FIXTURES / "firing_single.json"
        self.scripts = {"accepted": workdir / "fresh.lua", "duplicate": workdir / "same.lua"}
        self.scripts["accepted"].write_text(FRESH_LUA)
        self.scripts["duplicate"].write_text(SAME_LUA)
        self.tag = os.urandom(2).hex()
        self.runs = 0

    def load(self, url: str, path: str, seconds: int) -> str:
        self.runs += 1
        tag = f"{self.tag}{self.runs:03x}"
        a = self.args
        return wrk(url, self.scripts[path], self.body, tag, seconds, a.connections, a.threads)

    def measure(self, server: str, url: str, path: str, pid: int) -> Run:
        self.load(url, path, WARMUP_SECONDS)
        before = cpu_seconds(pid)
        run = parse_wrk(self.load(url, path, self.args.duration), server, path)
        run.cpu_us = (cpu_seconds(pid) - before) / run.requests * 1e6
        return run

    def on_receiver(self, path: str) -> Run:
        with deployed_receiver(self.workdir) as receiver:
            run = self.measure("receiver", receiver.url, path, receiver.pid)
            seen = asyncio.run(counters(receiver.url))
        run.notes = ", ".join(f"{k} {v:.0f}" for k, v in seen.items())
        return run

    def profile(self, path: str) -> str:
        """py-spy samples of the receiver during one run of ``path``, summarised."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        raw = self.workdir / f"profile-{path}.txt"
        with deployed_receiver(self.workdir) as receiver:
            self.load(receiver.url, path, WARMUP_SECONDS)
            sampler = subprocess.Popen(
                [spy, "record", "-p", str(receiver.pid), "-d", str(self.args.duration),
                 "-r", "200", "-f", "raw", "-o", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            run = parse_wrk(self.load(receiver.url, path, self.args.duration), "receiver", path)
            sampler.wait(timeout=60)
        return summarize_profile(raw, run)


# Where a sample's time belongs: the first rule whose frame appears in its stack wins.
_PROFILE_RULES = [
    ("workers: jobs (service, store calls, logs)", ("WorkerPool.", "RollbackService.")),
    ("workers: queue and leases", ("supervise", "RedisStore.read", "renew")),
    ("webhook: JSON parse (intake.parse_delivery)", ("parse_delivery",)),
    ("webhook: per-alert validation and job (intake.admit)", ("admit (receiver/intake",)),
    ("webhook: store.ingest (batch, wait for the group commit)", ("RedisQueue.ingest ",)),
    ("webhook: Redis script calls (group commit)", ("_flush_ingest", "_IngestLink")),
    ("webhook: handler, answer and metrics", ("receiver/web/webhook.py",)),
    ("middleware: observe", ("observe (receiver/web/middleware",)),
    ("aiohttp: HTTP parsing, routing, writing", ("aiohttp/",)),
    ("redis client", ("redis/",)),
    ("event loop, sockets", ("asyncio/", "selectors")),
]


def summarize_profile(raw: Path, run: Run) -> str:
    totals: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        for name, needles in _PROFILE_RULES:
            if any(needle in stack for needle in needles):
                totals[name] += n
                break
        else:
            totals["other"] += n
    lines = [
        f"receiver, {run.path} path: {run.rate:.0f} req/s, p99 {run.p99:.2f} ms; "
        f"{samples} samples at 200 Hz over {run_seconds(raw, samples)}",
    ]
    for name, n in totals.most_common():
        lines.append(f"  {100 * n / samples:5.1f} %  {name}")
    return "\n".join(lines)


def run_seconds(raw: Path, samples: int) -> str:
    return f"~{samples / 200:.1f} s of busy process time"


def report(run: Run) -> None:
    print(
        f"  {run.server:<8} {run.path:<9} {run.rate:>8.0f} req/s  p50 {run.p50:6.2f} ms  "
        f"p90 {run.p90:6.2f} ms  p99 {run.p99:6.2f} ms  cpu {run.cpu_us:5.1f} us/req  "
        f"({run.requests} requests)" + (f"  [{run.notes}]" if run.notes else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 5 s runs")
    parser.add_argument("--duration", type=int, default=None, help="seconds per run (10)")
    parser.add_argument("--rounds", type=int, default=None, help="runs per server and path (3)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--profile", type=Path, help="write a py-spy summary of the receiver")
    args = parser.parse_args()
    args.duration = args.duration or (5 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    print_facts()
    print(
        f"webhook ingest: wrk -t{args.threads} -c{args.connections}, {args.duration} s per run "
        f"after {WARMUP_SECONDS} s warm-up, {args.rounds} round(s), servers in their own "
        "processes; receiver as deployed (serve, workers, deploy/policy.yaml, real Redis)"
    )
    results: dict[tuple[str, str], list[Run]] = collections.defaultdict(list)
    floor_prefix = new_prefix()
    floor_env = {"BENCH_KEY_PREFIX": floor_prefix, "BENCH_WEBHOOK_TOKEN": WEBHOOK_TOKEN}
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(args, Path(tmp))
        try:
            with running(["bare"]) as bare, running(["floor"], env=floor_env) as floor:
                for _ in range(args.rounds):
                    for path in PATHS:
                        for run in (
                            bench.measure("bare", bare.url, path, bare.pid),
                            bench.measure("floor", floor.url, path, floor.pid),
                            bench.on_receiver(path),
                        ):
                            report(run)
                            results[(run.server, run.path)].append(run)
        finally:
            delete_prefix(floor_prefix)
        if args.profile:
            summaries = [bench.profile(path) for path in PATHS]
            args.profile.write_text("\n\n".join(summaries) + "\n")
            print(f"\nprofile summary written to {args.profile}:\n")
            print("\n\n".join(summaries))

    print("\nmedians (ratio = receiver / bare req/s; cpu = the server's CPU time per request):")
    for path in PATHS:
        med = {
            server: (
                statistics.median(r.rate for r in results[(server, path)]),
                statistics.median(r.p99 for r in results[(server, path)]),
                statistics.median(r.cpu_us for r in results[(server, path)]),
            )
            for server in ("bare", "floor", "receiver")
        }
        for server, (rate, p99, cpu) in med.items():
            print(
                f"  {path:<9} {server:<8} {rate:>7.0f} req/s  p99 {p99:6.2f} ms  "
                f"cpu {cpu:6.1f} us/req"
            )
        ratio = med["receiver"][0] / med["bare"][0]
        verdict = (
            "meets" if ratio >= TARGET_RATIO and med["receiver"][1] < TARGET_P99_MS else "MISSES"
        )
        print(
            f"  {path:<9} receiver/bare {ratio:.2f} by req/s, "
            f"{med['bare'][2] / med['receiver'][2]:.2f} by cpu ({verdict} >= {TARGET_RATIO} and "
            f"p99 < {TARGET_P99_MS:.0f} ms); floor/bare {med['floor'][0] / med['bare'][0]:.2f} "
            f"by req/s, {med['bare'][2] / med['floor'][2]:.2f} by cpu; receiver/floor "
            f"{med['receiver'][0] / med['floor'][0]:.2f} by req/s, "
            f"{med['floor'][2] / med['receiver'][2]:.2f} by cpu"
        )


if __name__ == "__main__":
    main()
