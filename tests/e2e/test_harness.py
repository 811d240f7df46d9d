"""
The harness stops everything it started: process groups, and children that left them (no orphans).

These run in a second and need no Airflow: the real-Airflow tests rely on the same code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import airflow_stack
import psutil
import pytest
from airflow_stack import AirflowStack, ManagedProcess, StackSettings, handle_termination, stop_processes

if TYPE_CHECKING:
    from pathlib import Path

# A parent that starts one child in its own process group (as Airflow's task runner does) and one that
# ignores SIGTERM, prints their pids and waits.
_TREE = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    own_group = subprocess.Popen(sleeper, start_new_session=True)
    stubborn = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(600)"], stdout=subprocess.PIPE)
    stubborn.stdout.readline()
    print(own_group.pid, stubborn.pid, flush=True)
    time.sleep(600)
    """
)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_line(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.strip():
            return text.strip().splitlines()[-1]
        time.sleep(0.05)
    raise AssertionError(f"nothing written to {path} within {timeout:g} s")


def test_stop_leaves_no_orphan_even_outside_the_process_group(tmp_path: Path) -> None:
    log = tmp_path / "tree.log"
    process = ManagedProcess(
        "tree", [sys.executable, "-c", _TREE], env=dict(os.environ), log_path=log, cwd=tmp_path
    )
    process.start()
    own_group, stubborn = (int(pid) for pid in _wait_for_line(log).split())
    assert os.getpgid(own_group) != process.pid  # out of reach of killpg

    killed = stop_processes([process], grace_seconds=1.0)

    for pid in (process.pid, own_group, stubborn):
        assert pid is not None
        assert not _running(pid)
    assert killed == [stubborn], "only the child that ignores SIGTERM needed SIGKILL"
    assert not process.alive


def test_handle_termination_turns_sigterm_into_keyboard_interrupt() -> None:
    before = signal.getsignal(signal.SIGTERM)

    with handle_termination(), pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)

    assert signal.getsignal(signal.SIGTERM) is before


def test_stack_environment_is_local_and_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW_CONN_SOMETHING_ELSE", "postgres://x")
    stack = AirflowStack(
        StackSettings(
            home=tmp_path / "home",
            connections={"kling_default": {"conn_type": "kling", "password": "k"}},
            variables={"kling_video_bucket": "b"},
            parallelism=3,
        )
    )

    env = stack.env()

    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert "AIRFLOW_CONN_SOMETHING_ELSE" not in env
    assert env["AIRFLOW_CONN_KLING_DEFAULT"] == '{"conn_type": "kling", "password": "k"}'
    assert env["AIRFLOW_VAR_KLING_VIDEO_BUCKET"] == "b"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{stack.api_port}/execution/"
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    # Only the API server listens: the all-interfaces log servers are not started.
    argv = [" ".join(args) for _name, args in airflow_stack.COMPONENTS]
    assert "scheduler --skip-serve-logs" in argv
    assert "triggerer --skip-serve-logs" in argv


def test_run_cli_runs_airflow_with_the_stack_environment(tmp_path: Path) -> None:
    stack = AirflowStack(StackSettings(home=tmp_path / "home", variables={"kling_video_bucket": "bucket-x"}))
    (tmp_path / "home").mkdir()

    result = stack.run_cli("config", "get-value", "core", "parallelism", timeout=120.0)

    assert result.stdout.strip() == "4"


def test_subprocess_of_a_killed_harness_gets_sigterm(tmp_path: Path) -> None:
    # The harness itself is killed outright (SIGKILL, no cleanup): PR_SET_PDEATHSIG stops its children.
    pid_file = tmp_path / "child.pid"
    harness = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(airflow_stack.__file__)!r})
        from pathlib import Path
        from airflow_stack import ManagedProcess
        child = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"],
                               env={{}}, log_path=Path({str(tmp_path / "sleeper.log")!r}),
                               cwd=Path({str(tmp_path)!r}))
        child.start()
        Path({str(pid_file)!r}).write_text(str(child.pid))
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", harness])
    try:
        child = int(_wait_for_line(pid_file))
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child), "the child outlived the harness"
    finally:
        if parent.poll() is None:
            parent.kill()
