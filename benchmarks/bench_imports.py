"""
Benchmark: what importing the provider's operators, sensor and transfer adds on top of ``airflow.sdk``.

Every DAG file that uses the provider pays this at every parse. Each run is a whole fresh process
(``python -c ...``), so caches of one run cannot help the next, measured by its CPU time (user + system,
from ``wait4``: the wall time of a loaded shared machine swings too much); runs come in pairs (the
baseline, which imports ``airflow.sdk`` only, and a contender, which imports ``airflow.sdk`` and then the
provider's modules), the order inside each pair drawn at random, and the figure is the median of the paired
differences (with its quartiles). A contender is ``kling`` (this checkout) or ``kling@/path`` (another
checkout, e.g. the last commit unpacked with ``git archive``), for before/after figures in one run.

``--importtime`` adds, for the first contender, the modules ``-X importtime`` attributes the extra time to.

Run as a plain script (not a test)::

    .venv/bin/python benchmarks/bench_imports.py --runs 40
    .venv/bin/python benchmarks/bench_imports.py --runs 40 --contenders kling kling@/tmp/before --importtime
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASELINE = "import airflow.sdk"
PROVIDER = (
    "import airflow.sdk; import airflow_provider_kling.operators.kling, "
    "airflow_provider_kling.sensors.kling, airflow_provider_kling.transfers.kling_to_s3"
)


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
    process = subprocess.Popen([sys.executable, "-c", code], env=_env(path))
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{code!r} failed with exit code {process.returncode}")
    return 1000 * (usage.ru_utime + usage.ru_stime)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    low, mid, high = statistics.quantiles(values, n=4)
    return low, mid, high


def importtime_extra(path: str | None, top: int) -> list[tuple[float, str]]:
    """The modules the provider import adds, by their own time (``-X importtime``, ms), largest first."""

    def modules(code: str) -> dict[str, int]:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            env=_env(path),
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
    return sorted(extra, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="pairs per contender")
    parser.add_argument("--contenders", nargs="+", default=["kling"])
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()
    contenders = [_contender(spec) for spec in args.contenders]
    for _, path in contenders:  # warm the page cache and the .pyc files of every tree
        timed(PROVIDER, path)
    timed(BASELINE, None)

    results: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label, _ in contenders}
    for _ in range(args.runs):
        for label, path in random.sample(contenders, len(contenders)):
            pair = [("baseline", BASELINE), ("provider", PROVIDER)]
            random.shuffle(pair)
            times = {kind: timed(code, path if kind == "provider" else None) for kind, code in pair}
            results[label][0].append(times["baseline"])
            results[label][1].append(times["provider"])

    print(
        "| contender | pairs | airflow.sdk alone (CPU ms, median) | + provider (CPU ms, median) "
        "| extra (CPU ms, median of pairs) | extra, quartiles (ms) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for label, (base, provider) in results.items():
        extra = [p - b for b, p in zip(base, provider, strict=True)]
        low, mid, high = quartiles(extra)
        print(
            f"| {label} | {len(extra)} | {statistics.median(base):.0f} | {statistics.median(provider):.0f} | "
            f"{mid:.0f} | {low:.0f} to {high:.0f} |"
        )
    if args.importtime:
        label, path = contenders[0]
        print(f"\n`-X importtime`, {label}: the modules the provider adds, by their own time (one run)\n")
        print("| ms | module |\n|---:|---|")
        for own, name in importtime_extra(path, 15):
            print(f"| {own:.1f} | {name} |")
    print()
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
