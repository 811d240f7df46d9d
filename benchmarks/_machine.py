"""
The machine facts every benchmark prints under its table, so that a figure pasted into ``RESULTS.md`` says
where it was measured: CPU model and count, memory, OS, Python, Airflow, the load average at the end, and
the time.

The benchmarks are run as scripts (``python benchmarks/bench_x.py``: this folder is then first on
``sys.path``) and loaded by file path in ``tests/benchmarks``; each puts this folder on ``sys.path`` before
``from _machine import print_machine``, so the import works both ways.
"""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        total_kib = int(Path("/proc/meminfo").read_text().split()[1])  # "MemTotal: <n> kB" comes first
    except (OSError, IndexError, ValueError):
        return "unknown"
    return f"{total_kib / 1024 / 1024:.1f} GiB"


def _airflow_version() -> str:
    try:
        return version("apache-airflow")  # from the metadata: importing Airflow here would cost seconds
    except PackageNotFoundError:
        return "not installed"


def machine_facts(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The facts, in print order; ``extra`` (a benchmark's own, e.g. library versions) go before the load."""
    return {
        "cpu": f"{cpu_model()}, {os.cpu_count()} CPUs (shared)",
        "memory": _memory(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "airflow": _airflow_version(),
        **(extra or {}),
        "load average": f"{os.getloadavg()[0]:.1f} at the end",
        "time": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def print_machine(extra: dict[str, str] | None = None) -> None:
    """Print :func:`machine_facts` as a Markdown list under a ``Machine:`` line."""
    print("\nMachine:")
    for name, value in machine_facts(extra).items():
        print(f"- {name}: {value}")
