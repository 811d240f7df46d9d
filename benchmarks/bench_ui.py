"""
Benchmark: the Kling view's list endpoint (``GET /kling/api/videos``) over many recorded Kling tasks.

A fresh SQLite metadata database (Airflow's tables, built from its models) is filled with ``--tasks``
finished Kling tasks over ``--dags`` DAGs, runs spread over the last 29 days, every other one also landed
in S3 (so 1,000 tasks are 1,500 XCom records); then the endpoint is called ``--rounds`` times in this
process through FastAPI's test client, as an authenticated user of the simple auth manager, with the
gallery's default query (the last 30 days, which hold every task; 12 cards a page; totals over the whole
range). Each call is timed end to end, in wall-clock time and in this process's CPU time (which the load
of other processes on the machine does not inflate): authentication (the JWT), the auth manager's list of
readable DAGs, the query, merging, filtering, the page's cards, the totals, JSON. The SQL statements of
each call are counted: they must not grow with the number of tasks (no N+1). Logging is at WARNING.

Run as a plain script (not a test)::

    .venv/bin/python benchmarks/bench_ui.py                 # 1,000 tasks, 50 calls
    .venv/bin/python benchmarks/bench_ui.py --tasks 20 --rounds 3

It prints a Markdown table (paste it into ``benchmarks/RESULTS.md``) and the machine's facts.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling _machine, also when loaded by path
from _machine import print_machine

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="Kling tasks recorded (default %(default)s)")
    parser.add_argument(
        "--dags", type=int, default=10, help="DAGs they are spread over (default %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=50, help="timed calls (default %(default)s)")
    parser.add_argument("--per-page", type=int, default=12, help="cards per page (default %(default)s)")
    args = parser.parse_args(argv)
    if not (1 <= args.tasks <= 100_000 and 1 <= args.dags <= 1000 and 1 <= args.rounds <= 10_000):
        parser.error("--tasks 1..100000, --dags 1..1000, --rounds 1..10000")
    return args


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = tempfile.mkdtemp(prefix="kling-bench-ui-")
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    try:
        return run(args)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    from airflow import settings
    from fastapi.testclient import TestClient
    from plugins._support import create_tables, install_auth_manager, seed, token_for  # tests/plugins
    from sqlalchemy import event

    from airflow_provider_kling.plugins.app import create_app

    logging.getLogger().setLevel(logging.WARNING)
    started = time.perf_counter()
    create_tables()
    install_auth_manager()
    dag_ids = tuple(f"kling_bench_{number:03d}" for number in range(args.dags))
    seed(count=args.tasks, dag_ids=dag_ids, prefix="bench", spacing=timedelta(days=29) / args.tasks)
    print(f"Seeded {args.tasks:,} Kling tasks over {args.dags} DAGs in {time.perf_counter() - started:.1f} s")

    statements: list[str] = []
    event.listen(settings.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    client = TestClient(create_app())
    client.headers["Authorization"] = f"Bearer {token_for('bench_viewer')}"
    url = f"/api/videos?per_page={args.per_page}"
    first = client.get(url)  # warm-up: the app's first request builds its caches
    first.raise_for_status()
    body = first.json()
    if body["total"] != args.tasks:
        raise SystemExit(f"the endpoint listed {body['total']} tasks, not {args.tasks}")
    timings: list[float] = []
    cpu: list[float] = []
    counts: list[int] = []
    for _ in range(args.rounds):
        statements.clear()
        start, start_cpu = time.perf_counter(), time.process_time()
        answer = client.get(url)
        timings.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        answer.raise_for_status()
        counts.append(len(statements))
    print(
        "\n| tasks (XCom records) | DAGs | calls | p50 (ms) | p95 (ms) | max (ms) | CPU p50 (ms) "
        "| SQL statements per call |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    records = args.tasks + (args.tasks + 1) // 2
    print(
        f"| {args.tasks:,} ({records:,}) | {args.dags} | {args.rounds} | {statistics.median(timings):.1f} | "
        f"{percentile(timings, 0.95):.1f} | {max(timings):.1f} | {statistics.median(cpu):.1f} | "
        f"{min(counts)}-{max(counts)} |"
    )
    print_machine({"database": "SQLite"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
