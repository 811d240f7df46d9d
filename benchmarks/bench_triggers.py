"""
Benchmark: how many ``KlingTaskTrigger`` one event loop (one triggerer process) holds, and at what CPU.

The triggerer runs every trigger as a coroutine on one asyncio loop; this benchmark does the same with N
triggers, each waiting for its own task on the local simulator (``kling-simulator``, a separate process so
that its CPU is not counted here). Tasks never finish on their own (``task_seconds`` 3600): once the
simulator has answered ``polls`` status queries per trigger, the benchmark moves the simulator's clock
forward and every trigger sees ``Success`` on its next poll. It measures, for this process only:

* CPU per status query (``time.process_time`` over the run, divided by the queries answered);
* the CPU a triggerer would spend at a realistic poll interval (30 s): ``N / 30 * CPU per query``;
* memory per trigger (RSS growth while the triggers run, divided by N);
* the longest stall of the event loop (a 50 ms ticker's largest gap) and the connections opened.

``--slots`` overrides ``hooks._clients.ASYNC_POOL_SIZE`` (the shared pool's connections and the per-loop
bound on requests in flight) to compare bounds; ``-1`` removes the bound and restores the old pool (64
connections, 32 kept alive), so every trigger's query queues in httpcore's connection pool.

Run as a plain script (not a test)::

    .venv/bin/python benchmarks/bench_triggers.py                          # 100, 500, 1000, 2000 triggers
    .venv/bin/python benchmarks/bench_triggers.py --triggers 1000 --slots 4 8 16 32 64

It prints a Markdown table (paste it into ``benchmarks/RESULTS.md``) and the machine's facts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REQUEST = {"model": "kling-v3-omni", "input": {"prompt": "bench"}, "parameters": {"aspect_ratio": "16:9"}}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Ticker:
    """A 50 ms ticker on the loop; its largest gap is the loop's longest stall."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.05)
            self.max_gap = max(self.max_gap, loop.time() - before - 0.05)


async def run_triggers(
    task_ids: list[str], *, polls: int, poll_interval: float, admin: Any
) -> dict[str, Any]:
    from airflow_provider_kling.triggers.kling import KlingTaskTrigger

    count = len(task_ids)
    triggers = [
        KlingTaskTrigger(kling_task_id=task_id, poll_interval=poll_interval, timeout=3600)
        for task_id in task_ids
    ]
    ticker = Ticker()
    ticker_task = asyncio.create_task(ticker.run())
    before_stats = admin.stats()

    async def finish_after_polls() -> None:
        while True:
            stats = await asyncio.to_thread(admin.stats)
            if (
                stats["requests"].get("status", 0) - before_stats["requests"].get("status", 0)
                >= polls * count
            ):
                break
            await asyncio.sleep(0.25)
        await asyncio.to_thread(admin.advance_time, 7200)

    async def one(trigger: KlingTaskTrigger) -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        return "none"

    rss_before = rss_mib()
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    statuses, _ = await asyncio.gather(
        asyncio.gather(*(one(trigger) for trigger in triggers)), finish_after_polls()
    )
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    rss_after = rss_mib()
    ticker_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker_task
    after_stats = admin.stats()
    queries = after_stats["requests"].get("status", 0) - before_stats["requests"].get("status", 0)
    return {
        "triggers": count,
        "succeeded": sum(status == "success" for status in statuses),
        "queries": queries,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ms_per_query": 1000 * cpu / queries,
        "queries_per_s": queries / wall,
        "cpu_at_30s_poll_pct": 100 * (count / 30) * (cpu / queries),
        "rss_kib_per_trigger": 1024 * (rss_after - rss_before) / count,
        "max_stall_ms": 1000 * ticker.max_gap,
        "connections": after_stats["connections"]["total"] - before_stats["connections"]["total"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triggers", type=int, nargs="+", default=[100, 500, 1000, 2000])
    parser.add_argument(
        "--slots", type=int, nargs="+", default=[0], help="0: the provider's default; -1: no bound"
    )
    parser.add_argument("--polls", type=int, default=3, help="status queries per trigger before success")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()

    simulator = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_kling.testing", "--port", "0", "--task-seconds", "3600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert simulator.stdout is not None
        base_url = simulator.stdout.readline().strip()
        os.environ["AIRFLOW_CONN_KLING_DEFAULT"] = json.dumps(
            {"conn_type": "kling", "host": base_url, "password": "sim-key"}
        )
        import logging

        logging.disable(logging.WARNING)  # the story lines of thousands of triggers are not the benchmark
        import httpx

        from airflow_provider_kling.hooks import _clients
        from airflow_provider_kling.hooks.kling import KlingHook
        from airflow_provider_kling.testing.simulator_client import KlingSimulatorClient

        admin = KlingSimulatorClient(base_url)
        default_slots = _clients.ASYNC_POOL_SIZE
        rows = []
        for slots in args.slots:
            # Read when each run's loop creates its shared client and semaphore.
            size = slots if slots > 0 else default_slots
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=30.0)
            if slots < 0:
                size, limits = 1_000_000, httpx.Limits(max_connections=64, max_keepalive_connections=32)
            _clients.ASYNC_POOL_SIZE = size  # type: ignore[misc]
            _clients.ASYNC_LIMITS = limits  # type: ignore[misc]
            for count in args.triggers:
                admin.reset()
                admin.configure(task_seconds=3600)
                with KlingHook() as hook:
                    task_ids = [hook.submit_task(REQUEST) for _ in range(count)]
                row = asyncio.run(
                    run_triggers(task_ids, polls=args.polls, poll_interval=args.poll_interval, admin=admin)
                )
                row["slots"] = "none" if slots < 0 else (slots or default_slots)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        simulator.terminate()
        simulator.wait(10)

    print(
        "| triggers | slots | queries | wall (s) | queries/s | CPU ms/query | CPU at 30 s polls "
        "| RSS KiB/trigger | longest loop stall (ms) | connections |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        assert row["succeeded"] == row["triggers"], row
        print(
            f"| {row['triggers']} | {row['slots']} | {row['queries']} | {row['wall_s']:.1f} | "
            f"{row['queries_per_s']:.0f} | {row['cpu_ms_per_query']:.2f} | "
            f"{row['cpu_at_30s_poll_pct']:.1f} % | {row['rss_kib_per_trigger']:.1f} | "
            f"{row['max_stall_ms']:.0f} | {row['connections']} |"
        )
    print()
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
