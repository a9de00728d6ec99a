"""Throughput of ``POST /webhook/alertmanager`` against a bare aiohttp JSON handler.

    python benchmarks/webhook_ingest.py [--quick] [--requests N] [--concurrency C]

Two servers, each in its own process (``benchmarks/_serve.py``), one client in this process:

- bare: an aiohttp handler that parses the JSON body and answers 200, nothing else;
- receiver: the product's app (``create_app``) on real Redis, with the workers off
  (``run_workers=False``) so only the webhook path is measured: bearer check, content type,
  body limit, JSON, v4 validation, per-alert validation, one Lua script (dedup + XADD),
  metrics and the JSON answer. The start-up supervisor still runs, as in production.

The client is one aiohttp ``ClientSession`` with a fixed number of concurrent senders
(keep-alive connections), posting a fixed number of requests after a warm-up. Bodies are
``firing_single.json`` with a unique fingerprint each (every alert ``accepted``: the full
Lua path with SET NX + XADD), then the identical body every time (every alert after the
first a ``duplicate``). Design target: receiver >= 0.5 x bare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import (
    ADMIN_TOKEN,
    REDIS_URL,
    WEBHOOK_TOKEN,
    delete_prefix,
    fixture_body,
    new_prefix,
    percentile,
    print_facts,
    running,
    wait_ready,
    webhook_headers,
)

TARGET_RATIO = 0.5


def unique_bodies(count: int, tag: str) -> list[bytes]:
    """``firing_single.json`` byte for byte, but with a fingerprint of its own each."""
    raw = fixture_body("firing_single")
    original = re.search(rb'"fingerprint":"([0-9a-f]+)"', raw)
    assert original is not None
    needle = b'"fingerprint":"' + original.group(1) + b'"'
    return [
        raw.replace(needle, b'"fingerprint":"' + f"{tag}{i:010x}".encode() + b'"')
        for i in range(count)
    ]


async def blast(
    session: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    """POST every body once with ``concurrency`` senders; (seconds, latencies, statuses)."""
    headers = webhook_headers()
    position = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def sender() -> None:
        nonlocal position
        while position < len(bodies):
            body = bodies[position]
            position += 1
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


async def alerts_by_outcome(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for m in re.finditer(r'^receiver_alerts_total\{outcome="(\w+)"\} (\S+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


async def measure(
    base: str, bodies: list[bytes], warmup: list[bytes], concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{base}/webhook/alertmanager"
        await blast(session, url, warmup, concurrency)
        return await blast(session, url, bodies, concurrency)


def report(name: str, seconds: float, latencies: list[float], statuses: dict[int, int]) -> float:
    rate = len(latencies) / seconds
    print(
        f"  {name:<28} {rate:>8.0f} req/s  ({len(latencies)} in {seconds:.2f}s; "
        f"latency p50 {percentile(latencies, 50) * 1000:.2f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.2f} ms; status {statuses})"
    )
    if set(statuses) != {200}:
        raise SystemExit(f"{name}: non-200 answers {statuses}")
    return rate


async def run(requests: int, warmup_count: int, concurrency: int) -> None:
    print_facts()
    print(
        f"webhook ingest: {requests} requests after {warmup_count} warm-up, "
        f"concurrency {concurrency}, one aiohttp ClientSession; servers in their own processes;"
        " receiver on real Redis with its workers off (webhook path only)"
    )
    tag = os.urandom(3).hex()
    fresh = unique_bodies(warmup_count + requests, tag)
    same = [fixture_body("firing_single")] * (warmup_count + requests)
    results: dict[str, float] = {}

    with running(["bare"]) as bare:
        for label, bodies in (("unique bodies", fresh), ("identical bodies", same)):
            seconds, lat, st = await measure(
                bare.url, bodies[warmup_count:], bodies[:warmup_count], concurrency
            )
            results[f"bare/{label}"] = report(f"bare, {label}", seconds, lat, st)

    for label, bodies in (("unique bodies", fresh), ("identical bodies", same)):
        prefix = new_prefix()
        env = {
            "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
            "RECEIVER_REDIS_URL": REDIS_URL,
            "RECEIVER_KEY_PREFIX": prefix,
        }
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "receiver.log"
            try:
                with running(["receiver", "--no-workers"], env=env, log_path=log) as receiver:
                    async with aiohttp.ClientSession() as s:
                        await wait_ready(s, receiver.url)
                    seconds, lat, st = await measure(
                        receiver.url, bodies[warmup_count:], bodies[:warmup_count], concurrency
                    )
                    name = f"receiver, {label}"
                    results[f"receiver/{label}"] = report(name, seconds, lat, st)
                    async with aiohttp.ClientSession() as s:
                        outcomes = await alerts_by_outcome(s, receiver.url)
                    print(f"  {'':<28} outcomes counted by the receiver: {outcomes}")
            finally:
                delete_prefix(prefix)

    print()
    for label in ("unique bodies", "identical bodies"):
        ratio = results[f"receiver/{label}"] / results[f"bare/{label}"]
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        print(
            f"  ratio receiver/bare, {label:<17} {ratio:.2f}  "
            f"({verdict} the >= {TARGET_RATIO} target)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    requests = args.requests or (1_000 if args.quick else 20_000)
    warmup = args.warmup if args.warmup is not None else (200 if args.quick else 2_000)
    asyncio.run(run(requests, warmup, args.concurrency))


if __name__ == "__main__":
    main()
