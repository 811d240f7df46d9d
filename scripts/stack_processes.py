"""
Long-running child processes of the harness: started in their own process group, stopped by their pids.

:class:`ManagedProcess` is one child (its output in a log file, ``PR_SET_PDEATHSIG`` so it goes when the
harness is killed outright); :func:`stop_processes` stops some of them and every descendant (``SIGTERM``,
then ``SIGKILL`` after a grace period); :func:`handle_termination` turns ``SIGTERM``/``SIGHUP`` into
``KeyboardInterrupt`` so that ``finally`` blocks run. Nothing here knows about Airflow.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from pathlib import Path

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
LOG_TAIL_BYTES = 6000

Echo = Callable[[str], None]


class HarnessError(RuntimeError):
    """The harness could not start Airflow, reach it, or see a run finish in time."""


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that is free right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to send the child ``SIGTERM`` when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tail_of(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """Return the last ``limit`` bytes of a file as text (empty if it does not exist).

    :param path: the file.
    :param limit: how many bytes at most.
    """
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - limit))
        return handle.read().decode("utf-8", errors="replace")


class ManagedProcess:
    """
    One long-running child process in its own session and process group, its output in a log file.

    :param name: a short name for messages.
    :param argv: the command line.
    :param env: the complete environment of the child.
    :param log_path: the file that receives stdout and stderr.
    :param cwd: the working directory.
    """

    def __init__(
        self, name: str, argv: list[str], *, env: Mapping[str, str], log_path: Path, cwd: Path
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        """The child's pid (also its process group id), once started."""
        return self.popen.pid if self.popen is not None else None

    @property
    def alive(self) -> bool:
        """Whether the child is running."""
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        """Start the child in a new session (its own process group)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def tree(self) -> list[psutil.Process]:
        """Return the child and every live descendant (task processes may sit in other process groups)."""
        if self.popen is None:
            return []
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's process group (no error if it is gone)."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signum)

    def log_tail(self, limit: int = LOG_TAIL_BYTES) -> str:
        """Return the end of the child's log.

        :param limit: how many bytes at most.
        """
        return tail_of(self.log_path, limit)


def stop_processes(processes: list[ManagedProcess], *, grace_seconds: float = 20.0) -> list[int]:
    """
    Stop processes and all their descendants: ``SIGTERM``, then ``SIGKILL`` to what outlives the grace.

    ``SIGTERM`` goes to each process group, and to every descendant that moved to a group of its own (as
    Airflow's task processes do); after ``grace_seconds`` the groups and every survivor get ``SIGKILL``.

    :param processes: the processes to stop.
    :param grace_seconds: how long to wait after ``SIGTERM`` before killing.
    :return: the pids that outlived the grace period and were killed with ``SIGKILL``.
    """
    groups = {process.pid for process in processes if process.pid is not None}
    known: dict[int, psutil.Process] = {}
    terminated: set[int] = set()

    def look() -> None:
        for process in processes:
            known.update({proc.pid: proc for proc in process.tree()})
            if process.popen is not None:
                process.popen.poll()  # reap the direct child
        for pid, proc in known.items():
            if pid not in terminated and pid not in groups and _pgid(proc) not in groups:
                terminated.add(pid)
                with contextlib.suppress(psutil.Error):
                    proc.terminate()

    look()
    for process in processes:
        process.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    survivors = list(known.values())
    while survivors and time.monotonic() < deadline:
        time.sleep(0.2)
        look()
        survivors = [proc for proc in known.values() if _is_running(proc)]
    for process in processes:
        process.signal_group(signal.SIGKILL)
    for proc in survivors:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for process in processes:
        if process.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=10.0)
    psutil.wait_procs(list(known.values()), timeout=5.0)
    return [proc.pid for proc in survivors]


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except OSError:
        return None


def _is_running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class _Terminated(KeyboardInterrupt):
    """``SIGTERM`` or ``SIGHUP`` arrived: unwind like ``Ctrl-C``, so ``finally`` blocks stop everything."""


@contextlib.contextmanager
def handle_termination() -> Iterator[None]:
    """
    Turn ``SIGTERM`` and ``SIGHUP`` into :class:`KeyboardInterrupt` in the main thread, for the duration.

    With it, ``kill <pid>`` of the demo unwinds exactly like ``Ctrl-C``: every ``finally`` and context
    manager stops what it started. ``SIGINT`` gets Python's own handler even where the process inherited
    it ignored (a job started in the background by a non-interactive shell), so ``kill -INT`` works too.
    """

    def _raise(signum: int, _frame: object) -> None:
        raise _Terminated(f"received {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def shielded_from_interrupts(echo: Echo) -> Iterator[None]:
    """While cleaning up, a second ``Ctrl-C``/``SIGTERM`` must not abort the cleanup half-way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _note(_signum: int, _frame: object) -> None:
        echo("Still stopping Airflow, please wait (bounded: at most ~30 s)...")

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _note) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
