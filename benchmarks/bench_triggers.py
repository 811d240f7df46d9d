"""
Benchmark: N ``KlingTaskTrigger`` on one event loop against the http provider's ``HttpSensorTrigger``.

The triggerer runs every trigger as a coroutine on one asyncio loop; each *phase* of this benchmark does
the same in a fresh child process: N triggers created together, each waiting for its own task. A separate
aiohttp process (``_bench_server.py``, its CPU is not counted) answers the status route after an injected
latency; a task id carries its finish time, and the tasks finish at staggered times, spread evenly over two
poll intervals starting two intervals after the triggers were created, in an order unrelated to the order
the triggers were created in. The anchor is what a user would
build without this provider: ``HttpSensorTrigger`` polling a route of the same server that answers 404
until the task is finished (it fires on the first non-404).

Measured in each phase, for the child process only:

* CPU per status query, all included (requests, parsing, validation, logging at INFO into a null
  stream): ``time.process_time`` over the phase, divided by the queries the server answered;
* RSS per waiting trigger: the highest RSS during the phase minus the RSS before the triggers were
  created (after the imports and one warm-up query), divided by N;
* event latency: when the trigger fired minus when its task finished (p50, p99, max);
* connections the server saw opened, the peak of requests in flight at the server, and the longest
  stall of the child's event loop (a 50 ms ticker's largest gap).

Every contender of a row runs in the same invocation, one after the other, against the same server:
read the ratios. A contender is ``anchor``, ``kling`` (this checkout), ``kling:bound=64`` (the connection
extra ``max_in_flight``) or ``kling@/path/to/another/checkout`` (e.g. the last commit, unpacked with
``git archive``), for before/after figures.

Run as a plain script (not a test)::

    .venv/bin/python benchmarks/bench_triggers.py --rows 2000:10:0 2000:10:0.2 --contenders anchor kling
    .venv/bin/python benchmarks/bench_triggers.py --rows 2000:10:0.2 \
        --contenders kling:bound=16 kling:bound=100

It prints a Markdown table (paste it into ``benchmarks/RESULTS.md``) and the machine's facts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling _machine, also when loaded by path (tests/benchmarks)
from _machine import print_machine  # noqa: E402

#: The default rows: the issue's table (N, poll interval in seconds, server latency in seconds).
DEFAULT_ROWS = ("10000:10:0", "2000:10:0.2", "10000:30:0.2")


def rss_kib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


# -- the child: one contender, one row ----------------------------------------------------------------------


class Sampler:
    """A 50 ms ticker on the loop: its largest gap is the loop's longest stall; it also samples RSS."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self.peak_rss = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            before = loop.time()
            await asyncio.sleep(0.05)
            self.max_gap = max(self.max_gap, loop.time() - before - 0.05)
            ticks += 1
            if ticks % 10 == 0:
                self.peak_rss = max(self.peak_rss, rss_kib())


def _make_trigger(kind: str, task_id: str, interval: float) -> Any:
    if kind == "anchor":
        from airflow.providers.http.triggers.http import HttpSensorTrigger

        return HttpSensorTrigger(
            endpoint=f"anchor/{task_id}", http_conn_id="http_bench", poke_interval=interval
        )
    from airflow_provider_kling.triggers.kling import KlingTaskTrigger

    return KlingTaskTrigger(
        kling_task_id=task_id, kling_conn_id="kling_bench", poll_interval=interval, timeout=7200
    )


async def _child_phase(kind: str, count: int, interval: float, base_url: str) -> dict[str, Any]:
    # Warm-up: one trigger on a finished task (imports, the connection, the shared client).
    async for _ in _make_trigger(kind, "b0-1000", interval).run():
        break
    gc.collect()
    stats_before = await asyncio.to_thread(_get, f"{base_url}/_bench/stats")
    sampler = Sampler()
    sampler_task = asyncio.create_task(sampler.run())
    rss_before = rss_kib()
    sampler.peak_rss = rss_before
    start = time.time()
    # Staggered evenly over two intervals, in an order unrelated to the order the triggers are created
    # in (a trigger created early may finish late): else a loop that works through its triggers in
    # order would meet the finishing tasks just in time, by construction.
    finish = [start + 2 * interval + 2 * interval * i / count for i in range(count)]
    random.Random(count).shuffle(finish)
    fired = [0.0] * count
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    triggers = [_make_trigger(kind, f"b{i}-{int(finish[i] * 1000)}", interval) for i in range(count)]

    failures: dict[str, int] = {}

    async def one(index: int) -> None:
        try:
            async for _ in triggers[index].run():
                fired[index] = time.time()
                return
        except Exception as error:  # a trigger that dies fires no event: counted, not the benchmark's end
            failures[type(error).__name__] = failures.get(type(error).__name__, 0) + 1

    await asyncio.gather(*(one(i) for i in range(count)))
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    sampler_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler_task
    stats = await asyncio.to_thread(_get, f"{base_url}/_bench/stats")
    route = "anchor" if kind == "anchor" else "status"
    queries = stats[route] - stats_before[route]
    latencies = sorted(fired[i] - int(finish[i] * 1000) / 1000 for i in range(count) if fired[i])
    latencies = latencies or [math.nan]
    return {
        "failed": sum(failures.values()),
        "failures": failures,
        "queries": queries,
        "wall_s": wall,
        "cpu_ms_per_query": 1000 * cpu / max(queries, 1),
        "rss_kib_per_trigger": (sampler.peak_rss - rss_before) / count,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "max_s": latencies[-1],
        "connections": stats["connections"] - stats_before["connections"],
        "peak_in_flight": stats["peak_in_flight"],
        "max_stall_ms": 1000 * sampler.max_gap,
    }


def child(args: argparse.Namespace) -> int:
    port = int(args.base_url.rpartition(":")[2])
    extra = {"max_in_flight": args.bound} if args.bound else {}
    os.environ["AIRFLOW_CONN_KLING_BENCH"] = json.dumps(
        {"conn_type": "kling", "host": args.base_url, "password": "bench-key", "extra": extra}
    )
    os.environ["AIRFLOW_CONN_HTTP_BENCH"] = json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}
    )
    # The story lines of the triggers are part of their cost, not of the output.
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"), force=True)  # noqa: SIM115
    row = asyncio.run(_child_phase(args.kind, args.count, args.interval, args.base_url))
    print(json.dumps(row), flush=True)
    return 0


# -- the parent: the server, the rows, the table ----------------------------------------------------------


def _contender(spec: str) -> tuple[str, str, int, str | None]:
    """``anchor`` | ``kling[:bound=B][@path]`` -> (label, kind, bound, source path)."""
    label = spec
    path = None
    if "@" in spec:
        spec, path = spec.split("@", 1)
        label = f"{spec} ({Path(path).name})"
    kind, _, options = spec.partition(":")
    bound = int(options.partition("=")[2]) if options.startswith("bound=") else 0
    if kind not in ("anchor", "kling"):
        raise SystemExit(f"unknown contender {spec!r}")
    return label, kind, bound, path


def run_phase(base_url: str, contender: str, count: int, interval: float, latency: float) -> dict[str, Any]:
    label, kind, bound, path = _contender(contender)
    _get(f"{base_url}/_bench/control?latency={latency}")
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--child", kind, "--count", str(count), "--interval", str(interval)]
    command += ["--base-url", base_url, "--bound", str(bound)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr[-4000:]}")
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    row.update(contender=label, triggers=count, interval=interval, latency_ms=round(1000 * latency))
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), help="N:interval:latency seconds")
    parser.add_argument("--contenders", nargs="+", default=["anchor", "kling"])
    parser.add_argument("--child", dest="kind", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--bound", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kind:
        return child(args)

    server = subprocess.Popen(
        [sys.executable, str(HERE / "_bench_server.py")], stdout=subprocess.PIPE, text=True
    )
    rows = []
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        for spec in args.rows:
            count, interval, latency = spec.split(":")
            for contender in args.contenders:
                rows.append(run_phase(base_url, contender, int(count), float(interval), float(latency)))
    finally:
        server.terminate()
        server.wait(10)

    print(
        "| N | interval (s) | latency (ms) | contender | queries | CPU ms/query | RSS KiB/trigger "
        "| p50 (s) | p99 (s) | max (s) | failed | connections | peak in flight | longest stall (ms) |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['triggers']} | {row['interval']:g} | {row['latency_ms']} | {row['contender']} | "
            f"{row['queries']} | {row['cpu_ms_per_query']:.2f} | {row['rss_kib_per_trigger']:.1f} | "
            f"{row['p50_s']:.1f} | {row['p99_s']:.1f} | {row['max_s']:.1f} | {row['failed']} | "
            f"{row['connections']} | "
            f"{row['peak_in_flight']} | {row['max_stall_ms']:.0f} |"
        )
    print_machine()
    return 0


if __name__ == "__main__":
    sys.exit(main())
