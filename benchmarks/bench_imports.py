"""
Benchmark: what importing the provider's operators, sensor and transfer adds on top of ``airflow.sdk``.

Every DAG file that uses the provider pays this at every parse. Each run is a whole fresh process
(``python -c ...``), so caches of one run cannot help the next, measured by its CPU time (user + system,
from ``wait4``: the wall time of a loaded shared machine swings too much); runs come in pairs (the
baseline, which imports ``airflow.sdk`` only, and a contender, which imports ``airflow.sdk`` and then the
provider's modules), the order inside each pair drawn at random, and the figure is the median of the paired
differences (with its quartiles). A contender is ``kling`` (this checkout) or ``kling@/path`` (another
checkout, e.g. the last commit unpacked with ``git archive``), for before/after figures in one run.

Each pair also runs a third process that builds one DAG using the three (a submit operator with a static
request, which is validated at parse time and so builds the request models; a sensor; a transfer): what a
DAG file pays in all, not only for its imports.

``--importtime`` adds, for the first contender, the modules ``-X importtime`` attributes the extra time to.

Run as a plain script (not a test)::

    .venv/bin/python benchmarks/bench_imports.py --runs 40
    .venv/bin/python benchmarks/bench_imports.py --runs 40 --contenders kling kling@/tmp/before --importtime
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling _machine, also when loaded by path
from _machine import print_machine

BASELINE = "import airflow.sdk"
PROVIDER = (
    "import airflow.sdk; import airflow_provider_kling.operators.kling, "
    "airflow_provider_kling.sensors.kling, airflow_provider_kling.transfers.kling_to_s3"
)

PARSE = (
    f"{PROVIDER}; from airflow.sdk import DAG; "
    "from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator; "
    "from airflow_provider_kling.sensors.kling import KlingTaskSensor; "
    "from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator\n"
    "with DAG('bench_parse', schedule=None):\n"
    "    KlingSubmitVideoOperator(task_id='submit', prompt='A fox', aspect_ratio='16:9', duration=5)\n"
    "    KlingTaskSensor(task_id='wait', kling_task_id='task-1')\n"
    "    KlingToS3Operator(task_id='copy', kling_task_id='task-1', s3_bucket='videos')"
)

#: The working directory of every measured process: ``python -c`` puts it first on ``sys.path``, so run
#: from this checkout it would shadow the ``PYTHONPATH`` of a ``kling@/path`` contender.
NEUTRAL_DIR = "/"


def _env(path: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    return env


def _contender(spec: str) -> tuple[str, str | None]:
    """``kling`` | ``kling@/path/to/checkout`` -> (label, source path)."""
    path = spec.partition("@")[2]
    return (f"kling ({Path(path).name})", path) if path else (spec, None)


def timed(code: str, path: str | None) -> float:
    """
    CPU milliseconds (user + system) of one whole process that runs ``code``.

    CPU time, not wall time: on a shared machine the wall time of a 3 s process swings by hundreds of
    milliseconds with the other load, its CPU time by a few.
    """
    process = subprocess.Popen([sys.executable, "-c", code], env=_env(path), cwd=NEUTRAL_DIR)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{code!r} failed with exit code {process.returncode}")
    return 1000 * (usage.ru_utime + usage.ru_stime)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    low, mid, high = statistics.quantiles(values, n=4)
    return low, mid, high


def importtime_extra(path: str | None) -> list[tuple[float, str]]:
    """The modules the provider import adds, by their own time (``-X importtime``, ms), largest first."""

    def modules(code: str) -> dict[str, int]:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            env=_env(path),
            cwd=NEUTRAL_DIR,
            capture_output=True,
            text=True,
            check=True,
        )
        found = {}
        for line in done.stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                own, _, name = line.partition(":")[2].split("|")
                found[name.strip()] = int(own)
        return found

    base, provider = modules(BASELINE), modules(PROVIDER)
    extra = [(own / 1000, name) for name, own in provider.items() if name not in base]
    return sorted(extra, reverse=True)


def importtime_runs(
    contenders: list[tuple[str, str | None]], runs: int
) -> dict[str, list[list[tuple[float, str]]]]:
    """
    Per contender, ``runs`` runs of :func:`importtime_extra` (every module the provider adds, own time in ms).

    ``-X importtime`` times each module inside one process, so the other load of a shared machine blurs it
    less than a whole process's time; the contenders' runs are interleaved.
    """
    measured: dict[str, list[list[tuple[float, str]]]] = {label: [] for label, _ in contenders}
    for _ in range(runs):
        for label, path in random.sample(contenders, len(contenders)):
            measured[label].append(importtime_extra(path))
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="pairs per contender")
    parser.add_argument("--contenders", nargs="+", default=["kling"])
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--importtime-runs", type=int, default=9, help="runs per contender of -X importtime")
    args = parser.parse_args()
    contenders = [_contender(spec) for spec in args.contenders]
    for _, path in contenders:  # warm the page cache and the .pyc files of every tree
        timed(PARSE, path)
    timed(BASELINE, None)

    results: dict[str, tuple[list[float], list[float], list[float]]] = {
        label: ([], [], []) for label, _ in contenders
    }
    for _ in range(args.runs):
        for label, path in random.sample(contenders, len(contenders)):
            group = [("baseline", BASELINE), ("provider", PROVIDER), ("dag", PARSE)]
            random.shuffle(group)
            times = {kind: timed(code, None if kind == "baseline" else path) for kind, code in group}
            for column, kind in zip(results[label], ("baseline", "provider", "dag"), strict=True):
                column.append(times[kind])

    print(
        "| contender | pairs | airflow.sdk alone (CPU ms, median) | + provider (CPU ms, median) "
        "| extra (CPU ms, median of pairs) | extra, quartiles (ms) "
        "| one DAG built: extra (median, quartiles) |"
    )
    print("|---|---:|---:|---:|---:|---|---|")
    for label, (base, provider, dag) in results.items():
        extra = [p - b for b, p in zip(base, provider, strict=True)]
        low, mid, high = quartiles(extra)
        dag_low, dag_mid, dag_high = quartiles([d - b for b, d in zip(base, dag, strict=True)])
        print(
            f"| {label} | {len(extra)} | {statistics.median(base):.0f} | {statistics.median(provider):.0f} | "
            f"{mid:.0f} | {low:.0f} to {high:.0f} | {dag_mid:.0f} ({dag_low:.0f} to {dag_high:.0f}) |"
        )
    if args.importtime:
        print("\n`-X importtime`: own time of the modules the provider adds, summed (ms)\n")
        print("| contender | runs | modules | median | quartiles |\n|---|---:|---:|---:|---|")
        measured = importtime_runs(contenders, args.importtime_runs)
        for label, runs in measured.items():
            low, mid, high = quartiles([sum(own for own, _ in extra) for extra in runs])
            print(f"| {label} | {len(runs)} | {len(runs[-1])} | {mid:.1f} | {low:.1f} to {high:.1f} |")
        label = contenders[0][0]
        print(f"\n`-X importtime`, {label}: the modules the provider adds, by their own time (last run)\n")
        print("| ms | module |\n|---:|---|")
        for own, name in measured[label][-1][:15]:
            print(f"| {own:.1f} | {name} |")
    print_machine()
    return 0


if __name__ == "__main__":
    sys.exit(main())
