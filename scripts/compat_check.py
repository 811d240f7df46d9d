#!/usr/bin/env python3
"""
Compatibility job: every Airflow minor that ``pyproject.toml`` claims is tested, not just claimed.

For each version (``3.0``, ``3.1``, ``3.2``: one virtualenv ``.venv-compat-3.X`` each, installed from the
hash-pinned ``ci/compat/airflow-3.X.txt``; ``3.3``: the main ``.venv`` built by ``make setup`` from
``uv.lock``) it

1. builds or updates the virtualenv (``uv venv`` + ``uv pip sync --require-hashes`` + ``uv pip install
   --no-deps -e .``; skipped for the main venv);
2. imports every module of ``airflow_provider_kling`` (walking the package);
3. parses every example DAG of ``example_dags/`` with Airflow's ``DagBag``: no import error, a DAG per file;
4. runs the unit tests of the operator, the sensor, the trigger and the S3 transfer (not the
   ``integration``/``e2e`` ones, which need a real Airflow or the local S3 server);

then prints one table (a row per version and step: pass/fail, counts, seconds). Each version runs with its
own throwaway ``AIRFLOW_HOME`` (SQLite; no ``airflow db migrate``: none of these steps needs a database).

It exits with 1 if any step fails on a version that the metadata claims (at or above the floor of
``apache-airflow>=X`` in ``pyproject.toml``); a version below the floor is still run and reported, as
information only.

Usage::

    python scripts/compat_check.py                      # 3.0 3.1 3.2 3.3
    python scripts/compat_check.py --versions 3.1 3.2   # some of them
    python scripts/compat_check.py --compile            # re-resolve ci/compat/*.txt from ci/compat/*.in first
    python scripts/compat_check.py --recreate --cold-cache   # rebuild from scratch with an empty uv cache

Only the standard library is used, so any Python 3.11+ runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPAT_DIR = REPO / "ci" / "compat"
PACKAGE = "airflow_provider_kling"
EXAMPLE_DAGS = REPO / "example_dags"
#: The main virtualenv (``make setup``, from ``uv.lock``) and the Airflow minor it holds.
MAIN_VENV = REPO / ".venv"
MAIN_MINOR = "3.3"
DEFAULT_VERSIONS = ("3.0", "3.1", "3.2", "3.3")
#: The unit tests of the operator, sensor, trigger and transfer (files or directories, relative to the repo).
TEST_PATHS = (
    "tests/operators/test_kling.py",
    "tests/sensors",
    "tests/triggers",
    "tests/transfers/test_kling_to_s3.py",
    "tests/transfers/test_kling_to_s3_semantics.py",
    "tests/test_compat.py",
)
#: Tests that need a real Airflow (scheduler, API server) or the local S3 server are left out.
TEST_MARKERS = "not integration and not e2e"
#: Per-step limits, in seconds.
BUILD_TIMEOUT = 1800
STEP_TIMEOUT = 600
TEST_TIMEOUT = 2400

# Run inside the version's venv: import every module of the package, print a JSON report on the last line.
IMPORT_SNIPPET = r"""
import importlib, json, pkgutil, sys, traceback, warnings
warnings.simplefilter("default")
name = sys.argv[1]
failed, ok = {}, []
def onerror(pkg):
    failed[pkg] = traceback.format_exc()
pkg = importlib.import_module(name)
ok.append(name)
for info in pkgutil.walk_packages(pkg.__path__, name + ".", onerror=onerror):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue
    try:
        importlib.import_module(info.name)
        ok.append(info.name)
    except BaseException:
        failed[info.name] = traceback.format_exc()
import airflow
print(json.dumps({"airflow": airflow.__version__, "ok": ok, "failed": failed}))
"""

# Run inside the version's venv: parse the example DAGs with DagBag, print a JSON report on the last line.
DAGBAG_SNIPPET = r"""
import inspect, json, sys, warnings
from pathlib import Path
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow >= 3.1 (the old path warns)
except ImportError:
    from airflow.models.dagbag import DagBag
folder = Path(sys.argv[1])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    # include_examples is gone in 3.3 (AIRFLOW__CORE__LOAD_EXAMPLES=False covers it there)
    accepted = inspect.signature(DagBag).parameters
    options = {"include_examples": False} if "include_examples" in accepted else {}
    bag = DagBag(dag_folder=str(folder), **options)
files = sorted(p.name for p in folder.glob("*.py") if not p.name.startswith("_"))
with_dag = {Path(dag.fileloc).name for dag in bag.dags.values()}
print(json.dumps({
    "files": files,
    "dag_ids": sorted(bag.dag_ids),
    "import_errors": {Path(k).name: v for k, v in bag.import_errors.items()},
    "files_without_dag": [f for f in files if f not in with_dag],
    "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
}))
"""


@dataclass
class StepResult:
    """The outcome of one step on one version."""

    name: str
    ok: bool
    seconds: float
    summary: str
    details: str = ""


@dataclass
class VersionReport:
    """Everything that happened on one Airflow minor."""

    minor: str
    venv: Path
    claimed: bool
    resolved: dict[str, str] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every step passed."""
        return all(step.ok for step in self.steps)


def claimed_floor(pyproject: Path = REPO / "pyproject.toml") -> tuple[int, ...]:
    """
    The lowest Airflow version the package metadata claims, from ``apache-airflow>=X`` in pyproject.

    :param pyproject: the ``pyproject.toml`` to read.
    :return: the floor as a tuple of ints, e.g. ``(3, 0)``; ``(0,)`` if no floor is declared.
    """
    data = tomllib.loads(pyproject.read_text())
    for spec in data["project"]["dependencies"]:
        match = re.fullmatch(r"\s*apache-airflow\s*(?:\[[^]]*\])?\s*(.*)", spec)
        if match:
            floor = re.search(r">=\s*([0-9][0-9.]*)", match.group(1))
            if floor:
                return tuple(int(part) for part in floor.group(1).split("."))
    return (0,)


def minor_tuple(minor: str) -> tuple[int, ...]:
    """
    ``"3.1"`` -> ``(3, 1)``.

    :param minor: an Airflow minor version.
    :return: its parts as ints.
    """
    return tuple(int(part) for part in minor.split("."))


def venv_of(minor: str) -> Path:
    """
    The virtualenv that holds Airflow ``minor``.

    :param minor: an Airflow minor version such as ``"3.1"``.
    :return: ``.venv`` for the main version, ``.venv-compat-<minor>`` otherwise.
    """
    return MAIN_VENV if minor == MAIN_MINOR else REPO / f".venv-compat-{minor}"


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = STEP_TIMEOUT
) -> tuple[int, str, float]:
    """
    Run a command from the repository root, capturing its output.

    :param cmd: the command and its arguments.
    :param env: the environment (default: this process's).
    :param timeout: seconds before the command is killed (reported as exit code 124).
    :return: the exit code, stdout and stderr together, and the wall time in seconds.
    """
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out + f"\n[timed out after {timeout:.0f} s]", time.monotonic() - start
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


def last_json(output: str) -> dict[str, object] | None:
    """
    The JSON object printed on the last line of ``output`` that holds one.

    :param output: a command's output.
    :return: the decoded object, or ``None`` if no line is a JSON object.
    """
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def uv_env(cache_dir: str | None) -> dict[str, str]:
    """
    The environment of ``uv`` commands: no Python downloads, copied files, optionally a given cache.

    :param cache_dir: ``UV_CACHE_DIR`` to use, or ``None`` for uv's default cache.
    :return: the environment.
    """
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_LINK_MODE="copy")
    env.pop("VIRTUAL_ENV", None)
    if cache_dir:
        env["UV_CACHE_DIR"] = cache_dir
    return env


def compile_requirements(uv: str, minor: str, cache_dir: str | None) -> StepResult:
    """
    Re-resolve ``ci/compat/airflow-<minor>.txt`` (with hashes) from ``ci/compat/airflow-<minor>.in``.

    ``--no-config`` keeps pyproject's ``[tool.uv] constraint-dependencies`` (Airflow 3.3 for the lock file)
    out of the resolution.

    :param uv: the uv binary.
    :param minor: the Airflow minor.
    :param cache_dir: the uv cache to use, or ``None``.
    :return: the step's result.
    """
    source = COMPAT_DIR / f"airflow-{minor}.in"
    target = COMPAT_DIR / f"airflow-{minor}.txt"
    cmd = [
        uv, "pip", "compile", "--no-config", "--quiet", "--generate-hashes",
        "--python-version", "3.11", "--python-platform", "x86_64-unknown-linux-gnu",
        "--custom-compile-command", f"python scripts/compat_check.py --compile --versions {minor}",
        str(source.relative_to(REPO)), "-o", str(target.relative_to(REPO)),
    ]  # fmt: skip
    code, out, seconds = run(cmd, env=uv_env(cache_dir), timeout=BUILD_TIMEOUT)
    return StepResult("compile", code == 0, seconds, "resolved" if code == 0 else f"exit {code}", out)


def build_venv(uv: str, minor: str, python: str, *, recreate: bool, cache_dir: str | None) -> StepResult:
    """
    Create (or update) ``.venv-compat-<minor>`` from the hash-pinned requirements and install the project.

    :param uv: the uv binary.
    :param minor: the Airflow minor.
    :param python: the interpreter the venv is built on.
    :param recreate: remove an existing venv first.
    :param cache_dir: the uv cache to use, or ``None`` for the default one.
    :return: the step's result.
    """
    venv = venv_of(minor)
    requirements = COMPAT_DIR / f"airflow-{minor}.txt"
    if not requirements.is_file():
        return StepResult("build", False, 0.0, f"missing {requirements.relative_to(REPO)}")
    if recreate and venv.exists():
        shutil.rmtree(venv)
    env = uv_env(cache_dir)
    vpy = str(venv / "bin" / "python")
    commands = []
    if not (venv / "bin" / "python").exists():
        commands.append([uv, "venv", "--quiet", "--python", python, str(venv)])
    commands += [
        [uv, "pip", "sync", "--no-config", "--quiet", "--python", vpy, "--require-hashes", str(requirements)],
        [uv, "pip", "install", "--no-config", "--quiet", "--python", vpy, "--no-deps", "-e", str(REPO)],
    ]
    total, log = 0.0, []
    for cmd in commands:
        code, out, seconds = run(cmd, env=env, timeout=BUILD_TIMEOUT)
        total += seconds
        log.append(f"$ {' '.join(cmd)}\n{out}")
        if code != 0:
            return StepResult("build", False, total, f"exit {code}: {cmd[1:3]}", "\n".join(log))
    return StepResult("build", True, total, "created" if len(commands) == 3 else "synced", "\n".join(log))


def resolved_versions(venv: Path) -> dict[str, str]:
    """
    The installed versions of the packages that matter, read from the venv's ``*.dist-info`` directories.

    :param venv: the virtualenv.
    :return: distribution name -> version.
    """
    wanted = {
        "apache_airflow": "airflow",
        "apache_airflow_core": "airflow-core",
        "apache_airflow_task_sdk": "task-sdk",
        "apache_airflow_providers_amazon": "amazon",
        "apache_airflow_providers_common_compat": "common-compat",
        "pydantic": "pydantic",
        "sqlalchemy": "sqlalchemy",
    }
    found: dict[str, str] = {}
    for dist in venv.glob("lib/python*/site-packages/*.dist-info"):
        name, _, version = dist.name.removesuffix(".dist-info").partition("-")
        key = wanted.get(name.lower())
        if key:
            found[key] = version
    return {label: found[label] for label in wanted.values() if label in found}


def step_imports(vpy: str, env: dict[str, str]) -> StepResult:
    """
    Import every module of the package.

    :param vpy: the venv's interpreter.
    :param env: the environment (with the throwaway ``AIRFLOW_HOME``).
    :return: the step's result.
    """
    code, out, seconds = run([vpy, "-c", IMPORT_SNIPPET, PACKAGE], env=env)
    report = last_json(out)
    if report is None:
        return StepResult("imports", False, seconds, f"exit {code}, no report", out)
    ok, failed = report["ok"], report["failed"]
    assert isinstance(ok, list)
    assert isinstance(failed, dict)
    details = "\n".join(f"--- {name}\n{tb}" for name, tb in failed.items())
    summary = f"{len(ok)} ok, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")
    return StepResult("imports", code == 0 and not failed, seconds, summary, details)


def step_dagbag(vpy: str, env: dict[str, str]) -> StepResult:
    """
    Parse the example DAGs with ``DagBag``.

    :param vpy: the venv's interpreter.
    :param env: the environment (with the throwaway ``AIRFLOW_HOME``).
    :return: the step's result.
    """
    code, out, seconds = run([vpy, "-c", DAGBAG_SNIPPET, str(EXAMPLE_DAGS)], env=env)
    report = last_json(out)
    if report is None:
        return StepResult("dagbag", False, seconds, f"exit {code}, no report", out)
    errors = report["import_errors"]
    missing = report["files_without_dag"]
    assert isinstance(errors, dict)
    assert isinstance(missing, list)
    files, dag_ids, warns = report["files"], report["dag_ids"], report["warnings"]
    assert isinstance(files, list)
    assert isinstance(dag_ids, list)
    assert isinstance(warns, list)
    summary = f"{len(dag_ids)} DAGs from {len(files)} files, {len(errors)} import errors"
    if missing:
        summary += f", no DAG in {', '.join(missing)}"
    if warns:
        summary += f", {len(warns)} distinct warnings"
    details = "\n".join([*(f"--- {name}\n{tb}" for name, tb in errors.items()), *warns])
    return StepResult("dagbag", code == 0 and not errors and not missing, seconds, summary, details)


def step_tests(vpy: str, env: dict[str, str], junit: Path) -> StepResult:
    """
    Run the operator, sensor, trigger and transfer unit tests.

    :param vpy: the venv's interpreter.
    :param env: the environment (with the throwaway ``AIRFLOW_HOME``).
    :param junit: where pytest writes its JUnit XML report (the counts are read from it).
    :return: the step's result.
    """
    paths = [p for p in TEST_PATHS if (REPO / p).exists()]
    absent = [p for p in TEST_PATHS if p not in paths]
    cmd = [
        vpy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", TEST_MARKERS,
        "--continue-on-collection-errors", f"--junitxml={junit}", "-o", "junit_family=xunit2", *paths,
    ]  # fmt: skip
    code, out, seconds = run(cmd, env=env, timeout=TEST_TIMEOUT)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.is_file():
        for suite in ET.parse(junit).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, "0"))
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    summary = (
        f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
        f"{counts['skipped']} skipped"
    )
    if code not in (0, 1):
        summary += f" (pytest exit {code})"
    if absent:
        summary += f"; missing: {', '.join(absent)}"
    return StepResult("tests", code == 0 and not absent, seconds, summary, out)


def check_version(
    uv: str,
    minor: str,
    python: str,
    *,
    build: bool,
    recreate: bool,
    cache_dir: str | None,
    floor: tuple[int, ...],
) -> VersionReport:
    """
    Build (or update) one version's venv and run the three checks in it.

    :param uv: the uv binary.
    :param minor: the Airflow minor.
    :param python: the interpreter venvs are built on.
    :param build: build/update the venv first (never for the main venv, which ``make setup`` owns).
    :param recreate: remove the venv before building it.
    :param cache_dir: the uv cache, or ``None``.
    :param floor: the lowest Airflow version pyproject claims.
    :return: the version's report.
    """
    venv = venv_of(minor)
    report = VersionReport(minor, venv, claimed=minor_tuple(minor) >= floor[:2])
    if build and venv != MAIN_VENV:
        report.steps.append(build_venv(uv, minor, python, recreate=recreate, cache_dir=cache_dir))
        if not report.steps[-1].ok:
            return report
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        report.steps.append(StepResult("build", False, 0.0, f"no interpreter at {vpy}"))
        return report
    report.resolved = resolved_versions(venv)
    with tempfile.TemporaryDirectory(prefix=f"compat-airflow-{minor}-") as home:
        env = dict(os.environ)
        for key in ("VIRTUAL_ENV", "PYTHONPATH", "AIRFLOW_CONFIG"):
            env.pop(key, None)
        env.update(
            AIRFLOW_HOME=home,
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
            PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        )
        report.steps.append(step_imports(str(vpy), env))
        report.steps.append(step_dagbag(str(vpy), env))
        report.steps.append(step_tests(str(vpy), env, Path(home) / "junit.xml"))
    return report


def print_table(reports: list[VersionReport]) -> None:
    """
    Print the per-version summary: the resolved key packages, then a row per step.

    :param reports: the reports of every version run.
    """
    print("\n== Airflow compatibility ==")
    for rep in reports:
        pins = ", ".join(f"{k} {v}" for k, v in rep.resolved.items()) or "-"
        print(f"{rep.minor} ({rep.venv.name}{'' if rep.claimed else ', below the claimed floor'}): {pins}")
    header = f"{'airflow':<8} {'step':<8} {'result':<6} {'seconds':>8}  summary"
    print(header)
    print("-" * len(header))
    for rep in reports:
        for step in rep.steps:
            result = "pass" if step.ok else "FAIL"
            print(f"{rep.minor:<8} {step.name:<8} {result:<6} {step.seconds:>8.1f}  {step.summary}")
        total = sum(step.seconds for step in rep.steps)
        verdict = "pass" if rep.ok else ("FAIL" if rep.claimed else "fail (not claimed)")
        print(f"{rep.minor:<8} {'total':<8} {verdict:<6} {total:>8.1f}")


def print_failures(reports: list[VersionReport], limit: int) -> None:
    """
    Print the output of every failed step (its last ``limit`` lines).

    :param reports: the reports of every version run.
    :param limit: how many lines of each failed step's output to keep.
    """
    for rep in reports:
        for step in rep.steps:
            if step.ok:
                continue
            lines = step.details.splitlines()
            print(f"\n== Airflow {rep.minor}: {step.name} failed: {step.summary} ==")
            if len(lines) > limit:
                print(f"[... {len(lines) - limit} lines above ...]")
            print("\n".join(lines[-limit:]))


def main(argv: list[str] | None = None) -> int:
    """
    Run the compatibility job.

    :param argv: the command line (default: ``sys.argv[1:]``).
    :return: the exit code: 0 if every claimed version passed every step, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--versions", nargs="+", default=list(DEFAULT_VERSIONS), help="Airflow minors")
    parser.add_argument("--uv", default=str(REPO / ".uv-bootstrap" / "bin" / "uv"), help="the uv binary")
    parser.add_argument("--python", default=sys.executable, help="interpreter the venvs are built on")
    parser.add_argument("--compile", action="store_true", help="re-resolve ci/compat/*.txt from *.in first")
    parser.add_argument("--no-build", action="store_true", help="use the venvs as they are")
    parser.add_argument("--recreate", action="store_true", help="remove each compat venv and build it anew")
    parser.add_argument("--cold-cache", action="store_true", help="build with an empty, temporary uv cache")
    parser.add_argument("--log-lines", type=int, default=60, help="output lines shown per failed step")
    parser.add_argument("--json", type=Path, help="also write the reports to this JSON file")
    args = parser.parse_args(argv)

    floor = claimed_floor()
    print(
        f"pyproject claims apache-airflow >= {'.'.join(map(str, floor))}; versions: {' '.join(args.versions)}"
    )
    cache_dir = tempfile.mkdtemp(prefix="compat-uv-cache-") if args.cold_cache else None
    reports: list[VersionReport] = []
    try:
        for minor in args.versions:
            print(f"-- Airflow {minor} ...", flush=True)
            compiled = None
            if args.compile and minor != MAIN_MINOR:
                compiled = compile_requirements(args.uv, minor, cache_dir)
            if compiled is not None and not compiled.ok:
                report = VersionReport(minor, venv_of(minor), claimed=minor_tuple(minor) >= floor[:2])
                report.steps.append(compiled)
            else:
                report = check_version(
                    args.uv, minor, args.python, build=not args.no_build, recreate=args.recreate,
                    cache_dir=cache_dir, floor=floor,
                )  # fmt: skip
                if compiled is not None:
                    report.steps.insert(0, compiled)
            for step in report.steps:
                print(
                    f"   {step.name:<8} {'pass' if step.ok else 'FAIL'} {step.seconds:7.1f} s  {step.summary}"
                )
            reports.append(report)
    finally:
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)

    print_failures(reports, args.log_lines)
    print_table(reports)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "airflow": rep.minor,
                        "claimed": rep.claimed,
                        "ok": rep.ok,
                        "resolved": rep.resolved,
                        "steps": [
                            {"name": s.name, "ok": s.ok, "seconds": round(s.seconds, 1), "summary": s.summary}
                            for s in rep.steps
                        ],
                    }
                    for rep in reports
                ],
                indent=2,
            )
        )
    failed = [rep.minor for rep in reports if rep.claimed and not rep.ok]
    if failed:
        print(f"\nFAILED on claimed Airflow versions: {', '.join(failed)}")
        return 1
    print("\nEvery claimed Airflow version passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
