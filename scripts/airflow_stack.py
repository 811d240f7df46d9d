"""
A real Airflow on 127.0.0.1, started, driven and stopped from Python: the harness of the demo and e2e tests.

:class:`AirflowStack` runs the four Airflow 3 components one by one (``scheduler``, ``dag-processor``,
``triggerer``, ``api-server``), each its own process group, against an ``AIRFLOW_HOME`` it owns (a SQLite
metadata database, the ``LocalExecutor`` with a capped ``[core] parallelism``, ``example_dags/`` as the DAGs
folder). Everything is configured by environment variables (``AIRFLOW__SECTION__KEY``, connections as
``AIRFLOW_CONN_<ID>`` JSON, variables as ``AIRFLOW_VAR_<NAME>``): nothing is written to ``airflow.cfg``.
Only the API server listens, on a free port of 127.0.0.1; the scheduler and triggerer log servers (which
bind every interface) are not started, because the API server reads the local log files directly.

Every wait is bounded. :meth:`AirflowStack.stop` stops what it started, also on ``Ctrl-C`` or ``SIGTERM``
(see :func:`handle_termination`): ``SIGTERM`` to every process group, then ``SIGKILL`` to what is left
(including task processes that moved to their own process group). Children get ``PR_SET_PDEATHSIG`` so
they also go when the harness process is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS_FOLDER = REPO_ROOT / "example_dags"
HOST = "127.0.0.1"

#: The components started, in order; the scheduler and triggerer without their all-interfaces log server.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scheduler", ("scheduler", "--skip-serve-logs")),
    ("dag-processor", ("dag-processor",)),
    ("triggerer", ("triggerer", "--skip-serve-logs")),
    ("api-server", ("api-server",)),
)
#: Health entries of ``/api/v2/monitor/health`` that must be ``healthy``.
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
#: Task states worth a progress line (queued/scheduled/none are noise on a console).
_REPORTED_STATES = {
    "running": "running",
    "deferred": "deferred: waiting in the triggerer, no worker slot held",
    "up_for_retry": "up for retry",
    "up_for_reschedule": "up for reschedule",
    "success": "success",
    "failed": "failed",
    "skipped": "skipped",
    "upstream_failed": "upstream failed",
}
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
_INHERITED_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")
_PR_SET_PDEATHSIG = 1
_LOG_TAIL_BYTES = 6000

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


def _tail(path: Path, limit: int = _LOG_TAIL_BYTES) -> str:
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

    def log_tail(self, limit: int = _LOG_TAIL_BYTES) -> str:
        """Return the end of the child's log.

        :param limit: how many bytes at most.
        """
        return _tail(self.log_path, limit)


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
def _shielded_from_interrupts(echo: Echo) -> Iterator[None]:
    """While cleaning up, a second ``Ctrl-C``/``SIGTERM`` must not abort the cleanup half-way."""
    import threading

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


@dataclass
class RunOutcome:
    """
    How a DAG run ended, as the harness observed it.

    :param dag_id: the DAG.
    :param run_id: the run.
    :param state: the run's final state (``success`` or ``failed``).
    :param seconds: seconds from the trigger to the final state.
    :param states_seen: every state the harness saw for each task instance, keyed ``task_id`` or
        ``task_id[map_index]``, in the order first seen.
    """

    dag_id: str
    run_id: str
    state: str
    seconds: float
    states_seen: dict[str, list[str]] = field(default_factory=dict)


class AirflowApi:
    """
    A small client of Airflow's public REST API (``/api/v2``) on 127.0.0.1.

    With ``[core] simple_auth_manager_all_admins`` the API server authorises every request itself, so no
    token is sent.

    :param base_url: the API server's URL, ``http://127.0.0.1:<port>``.
    :param timeout: the timeout of one request, in seconds.
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=f"{self.base_url}/api/v2", timeout=timeout, trust_env=False)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise HarnessError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def health(self) -> dict[str, Any]:
        """Return ``/api/v2/monitor/health``."""
        result: dict[str, Any] = self._json("GET", "/monitor/health")
        return result

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """Return a DAG's details, or ``None`` while the DAG processor has not parsed it yet.

        :param dag_id: the DAG.
        """
        response = self._client.get(f"/dags/{quote(dag_id, safe='')}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise HarnessError(f"GET dag {dag_id} answered {response.status_code}: {response.text[:500]}")
        result: dict[str, Any] = response.json()
        return result

    def set_paused(self, dag_id: str, *, paused: bool) -> None:
        """Pause or unpause a DAG.

        :param dag_id: the DAG.
        :param paused: the new state.
        """
        self._json("PATCH", f"/dags/{quote(dag_id, safe='')}", json={"is_paused": paused})

    def trigger(
        self,
        dag_id: str,
        *,
        run_id: str,
        logical_date: str | None,
        conf: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a manual DAG run.

        :param dag_id: the DAG.
        :param run_id: the run id to use.
        :param logical_date: ISO timestamp with a time zone, or ``None`` for a run without one.
        :param conf: the run's ``conf``.
        """
        body = {"dag_run_id": run_id, "logical_date": logical_date, "conf": dict(conf or {})}
        result: dict[str, Any] = self._json("POST", f"/dags/{quote(dag_id, safe='')}/dagRuns", json=body)
        return result

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """Return one DAG run.

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        result: dict[str, Any] = self._json("GET", f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}")
        return result

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Return the DAG's runs (newest first, at most 100).

        :param dag_id: the DAG.
        """
        result = self._json(
            "GET", f"/dags/{quote(dag_id, safe='')}/dagRuns", params={"limit": 100, "order_by": "-run_after"}
        )
        runs: list[dict[str, Any]] = result["dag_runs"]
        return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Return the task instances of a run (mapped ones included, at most 1000).

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        result = self._json(
            "GET",
            f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}/taskInstances",
            params={"limit": 1000},
        )
        instances: list[dict[str, Any]] = result["task_instances"]
        return instances

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, *, try_number: int = 1, map_index: int = -1
    ) -> str:
        """Return a task try's whole log as text, one line per event.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param try_number: the try.
        :param map_index: the map index (``-1`` when not mapped).
        """
        result = self._json(
            "GET",
            f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
            f"/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        return "\n".join(_log_line(entry) for entry in result.get("content", []))

    def task_log_entries(
        self, dag_id: str, run_id: str, task_id: str, *, try_number: int = 1, map_index: int = -1
    ) -> list[Any]:
        """Return a task try's whole log as the API gives it: one object per event, with every field.

        Besides ``event`` and ``level`` that :meth:`task_log` keeps, a failure's ``error_detail`` holds the
        exception's type, text and frames.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param try_number: the try.
        :param map_index: the map index (``-1`` when not mapped).
        """
        result = self._json(
            "GET",
            f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
            f"/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        entries: list[Any] = result.get("content", [])
        return entries

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, *, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """Return a task's XCom value (deserialized).

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param key: the XCom key.
        :param map_index: the map index (``-1`` when not mapped).
        """
        result = self._json(
            "GET",
            f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
            f"/xcomEntries/{quote(key)}",
            params={"map_index": map_index, "deserialize": "true", "stringify": "false"},
        )
        return result.get("value")

    def xcom_entries(
        self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1
    ) -> list[dict[str, Any]]:
        """Return every XCom entry of a task instance (keys and metadata; no values).

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param map_index: the map index (``-1`` when not mapped).
        """
        result = self._json(
            "GET",
            f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
            "/xcomEntries",
            params={"map_index": map_index, "limit": 100},
        )
        entries: list[dict[str, Any]] = result["xcom_entries"]
        return entries

    def put_pool(self, name: str, *, slots: int, description: str, include_deferred: bool) -> None:
        """Create or update a pool.

        :param name: the pool.
        :param slots: its slots.
        :param description: its description.
        :param include_deferred: whether deferred tasks hold a slot.
        """
        body = {
            "name": name,
            "slots": slots,
            "description": description,
            "include_deferred": include_deferred,
        }
        response = self._client.get(f"/pools/{quote(name, safe='')}")
        if response.status_code == 404:
            self._json("POST", "/pools", json=body)
        else:
            self._json("PATCH", f"/pools/{quote(name, safe='')}", json=body)

    def asset_events(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Return the newest asset events.

        :param limit: at most this many.
        """
        result = self._json("GET", "/assets/events", params={"limit": limit, "order_by": "-timestamp"})
        events: list[dict[str, Any]] = result["asset_events"]
        return events

    def post_connection(self, connection: Mapping[str, Any]) -> None:
        """Create a connection in the metadata database (as a user would in the UI).

        :param connection: the REST body (``connection_id``, ``conn_type``, ``host``, ``password``...).
        """
        self._json("POST", "/connections", json=dict(connection))

    def delete_connection(self, connection_id: str) -> None:
        """Delete a connection from the metadata database (no error if it does not exist).

        :param connection_id: the connection.
        """
        response = self._client.delete(f"/connections/{quote(connection_id, safe='')}")
        if response.status_code >= 400 and response.status_code != 404:
            raise HarnessError(f"DELETE connection {connection_id} answered {response.status_code}")


def _log_line(entry: Any) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    text = str(entry.get("event", ""))
    level = entry.get("level")
    return f"[{level}] {text}" if level else text


@dataclass
class StackSettings:
    """
    What an :class:`AirflowStack` runs with.

    :param home: the ``AIRFLOW_HOME`` (created; its content belongs to the stack).
    :param dags_folder: the DAGs folder (default: the repository's ``example_dags/``).
    :param connections: Airflow connections by id, as ``AIRFLOW_CONN_<ID>`` JSON objects.
    :param variables: Airflow variables, as ``AIRFLOW_VAR_<NAME>``.
    :param pools: pools created once the API answers: name -> (slots, include_deferred, description).
    :param parallelism: ``[core] parallelism``: the LocalExecutor keeps this many worker processes.
    :param api_port: the API server's port on 127.0.0.1 (default: a free one).
    :param extra_env: more environment variables for every Airflow process.
    """

    home: Path
    dags_folder: Path = EXAMPLE_DAGS_FOLDER
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    pools: Mapping[str, tuple[int, bool, str]] = field(default_factory=dict)
    parallelism: int = 4
    api_port: int | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)


class AirflowStack:
    """
    A real Airflow (scheduler, DAG processor, triggerer, API server) on 127.0.0.1.

    Use it as a context manager::

        with AirflowStack(StackSettings(home=Path(".demo/airflow"), connections={...})) as stack:
            run_id = stack.trigger("example_kling_text_to_video")
            outcome = stack.wait_for_run("example_kling_text_to_video", run_id, timeout=300)

    :param settings: what to run with.
    :param echo: where to print progress lines (default: nowhere).
    """

    def __init__(self, settings: StackSettings, *, echo: Echo | None = None) -> None:
        self.settings = settings
        self.echo: Echo = echo or (lambda _line: None)
        self.api_port = settings.api_port or free_port()
        self.processes: list[ManagedProcess] = []
        self._secrets = {
            "jwt": secrets.token_urlsafe(48),
            "api": secrets.token_urlsafe(32),
            "fernet": _fernet_key(),
        }
        self._api: AirflowApi | None = None
        self.startup_seconds: float | None = None

    @property
    def home(self) -> Path:
        """The ``AIRFLOW_HOME``."""
        return self.settings.home

    @property
    def api_url(self) -> str:
        """The API server's (and UI's) URL on 127.0.0.1."""
        return f"http://{HOST}:{self.api_port}"

    @property
    def component_log_dir(self) -> Path:
        """Where each component's stdout/stderr goes (``<name>.log``)."""
        return self.home / "logs" / "components"

    @property
    def api(self) -> AirflowApi:
        """A REST client of this Airflow."""
        if self._api is None:
            self._api = AirflowApi(self.api_url)
        return self._api

    def env(self) -> dict[str, str]:
        """
        Return the environment every Airflow process of this stack runs with (``airflow dags test`` too).

        The caller's own ``AIRFLOW__*``, ``AIRFLOW_CONN_*`` and ``AIRFLOW_VAR_*`` variables are dropped so
        that nothing from the outside changes the stack.
        """
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(_INHERITED_PREFIXES) and key not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
        }
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.settings.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__PARALLELISM": str(self.settings.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__FERNET_KEY": self._secrets["fernet"],
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API__HOST": HOST,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": self._secrets["api"],
                "AIRFLOW__API_AUTH__JWT_SECRET": self._secrets["jwt"],
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # Assets created through an AssetAlias (each landed video) become "active", and show in
                # the UI's Assets view, at the scheduler's next orphanage check: every 60 s by default.
                "AIRFLOW__SCHEDULER__PARSING_CLEANUP_INTERVAL": "10",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for conn_id, connection in self.settings.connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(dict(connection))
        for name, value in self.settings.variables.items():
            env[f"AIRFLOW_VAR_{name.upper()}"] = value
        env.update(self.settings.extra_env)
        return env

    def run_cli(
        self, *args: str, timeout: float = 300.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """
        Run ``airflow <args>`` with this stack's environment and return its result (output captured).

        :param args: the CLI arguments, e.g. ``("dags", "test", "example_kling_batch")``.
        :param timeout: seconds before the command is killed.
        :param check: raise :class:`HarnessError` on a non-zero exit.
        """
        argv = [str(Path(sys.executable).parent / "airflow"), *args]
        try:
            result = subprocess.run(
                argv,
                env=self.env(),
                cwd=self.home,
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            output = (error.stdout or b"")[-_LOG_TAIL_BYTES:]
            text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
            raise HarnessError(
                f"airflow {' '.join(args)} did not finish within {timeout:g} s:\n{text}"
            ) from error
        if check and result.returncode != 0:
            raise HarnessError(
                f"airflow {' '.join(args)} exited with {result.returncode}:\n"
                f"{(result.stdout + result.stderr)[-_LOG_TAIL_BYTES:]}"
            )
        return result

    def prepare(self, *, fresh: bool = True) -> None:
        """
        Create the ``AIRFLOW_HOME`` and its metadata database (``airflow db migrate``).

        :param fresh: delete an existing home first, so every start is the same.
        """
        if fresh and self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.echo(f"Airflow home {self.home}: creating the metadata database (SQLite)")
        self.run_cli("db", "migrate", timeout=180.0)

    def start(self, *, timeout: float = 180.0, fresh: bool = True) -> AirflowStack:
        """
        Prepare the home, start the four components and wait (bounded) until the API reports them healthy.

        :param timeout: seconds to wait for health, from the start of the components.
        :param fresh: start from an empty home.
        :raises HarnessError: when a component exits or health does not come within ``timeout``; every
            started process is stopped first.
        """
        started = time.monotonic()
        try:
            self.prepare(fresh=fresh)
            env = self.env()
            airflow = str(Path(sys.executable).parent / "airflow")
            for name, args in COMPONENTS:
                process = ManagedProcess(
                    name,
                    [airflow, *args],
                    env=env,
                    log_path=self.component_log_dir / f"{name}.log",
                    cwd=self.home,
                )
                process.start()
                self.processes.append(process)
            self.echo(
                "Started the Airflow scheduler, dag-processor, triggerer and api-server "
                f"(LocalExecutor, parallelism {self.settings.parallelism}); waiting until healthy"
            )
            self.wait_healthy(timeout=timeout)
            for pool, (slots, include_deferred, description) in self.settings.pools.items():
                self.api.put_pool(
                    pool, slots=slots, description=description, include_deferred=include_deferred
                )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self.echo(f"Airflow is healthy after {self.startup_seconds:.0f} s: {self.api_url}")
        return self

    def _check_alive(self) -> None:
        for process in self.processes:
            if not process.alive:
                raise HarnessError(
                    f"Airflow's {process.name} exited (code {process.popen and process.popen.returncode}); "
                    f"log tail ({process.log_path}):\n{process.log_tail()}"
                )

    def wait_healthy(self, *, timeout: float) -> dict[str, Any]:
        """
        Wait until ``/api/v2/monitor/health`` reports every component healthy.

        :param timeout: seconds.
        :raises HarnessError: on timeout or when a component exits.
        """
        deadline = time.monotonic() + timeout
        last: object = "no answer"
        while True:
            self._check_alive()
            try:
                health = self.api.health()
                last = health
                if all(health.get(name, {}).get("status") == "healthy" for name in HEALTH_COMPONENTS):
                    return health
            except (httpx.HTTPError, HarnessError) as error:
                last = error
            if time.monotonic() >= deadline:
                tails = "\n".join(f"--- {p.name}:\n{p.log_tail(1500)}" for p in self.processes)
                raise HarnessError(f"Airflow was not healthy within {timeout:g} s (last: {last}).\n{tails}")
            time.sleep(0.5)

    def wait_for_dag(self, dag_id: str, *, timeout: float = 120.0) -> dict[str, Any]:
        """
        Wait until the DAG processor has parsed ``dag_id`` and return its details.

        :param dag_id: the DAG.
        :param timeout: seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            dag = self.api.dag(dag_id)
            if dag is not None:
                return dag
            if time.monotonic() >= deadline:
                raise HarnessError(
                    f"DAG {dag_id} was not parsed within {timeout:g} s; import errors? {self.import_errors()}"
                )
            time.sleep(0.5)

    def import_errors(self) -> list[dict[str, Any]]:
        """Return the DAG processor's import errors."""
        result = self.api._json("GET", "/importErrors")
        errors: list[dict[str, Any]] = result["import_errors"]
        return errors

    def trigger(
        self,
        dag_id: str,
        *,
        run_id: str | None = None,
        conf: Mapping[str, Any] | None = None,
        unpause: bool = True,
        parse_timeout: float = 120.0,
    ) -> str:
        """
        Trigger a run of ``dag_id`` and unpause the DAG, so that the scheduler starts it; return its run id.

        The run's logical date is the DAG's next scheduled one (for a scheduled DAG), so that unpausing does
        not make the scheduler create a second run for the same date: the scheduler sees the run exists.
        Unscheduled DAGs get the current time.

        :param dag_id: the DAG.
        :param run_id: the run id (default ``manual__harness_<time>``).
        :param conf: the run's ``conf``.
        :param unpause: unpause the DAG (a paused DAG's runs stay queued).
        :param parse_timeout: seconds to wait for the DAG to be parsed.
        """
        dag = self.wait_for_dag(dag_id, timeout=parse_timeout)
        logical_date = dag.get("next_dagrun_logical_date") or _utc_now_iso()
        run_id = run_id or f"manual__harness_{time.strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(3)}"
        self.api.trigger(dag_id, run_id=run_id, logical_date=logical_date, conf=conf)
        if unpause:
            self.api.set_paused(dag_id, paused=False)
        self.echo(f"Triggered {dag_id} (run {run_id}, logical date {logical_date})")
        return run_id

    def wait_for_run(
        self, dag_id: str, run_id: str, *, timeout: float, poll_seconds: float = 0.5
    ) -> RunOutcome:
        """
        Wait (bounded) until a DAG run ends, recording every task state seen on the way.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param timeout: seconds.
        :param poll_seconds: seconds between two looks.
        :raises HarnessError: when the run does not end within ``timeout`` or a component exits.
        """
        started = time.monotonic()
        deadline = started + timeout
        seen: dict[str, list[str]] = {}
        last_states: dict[str, str] = {}
        while True:
            self._check_alive()
            for instance in self.api.task_instances(dag_id, run_id):
                key = instance["task_id"]
                if instance.get("map_index", -1) >= 0:
                    key = f"{key}[{instance['map_index']}]"
                state = instance.get("state") or "none"
                if state not in seen.setdefault(key, []):
                    seen[key].append(state)
                if last_states.get(key) != state:
                    last_states[key] = state
                    if state in _REPORTED_STATES:
                        self.echo(f"  {key}: {_REPORTED_STATES[state]}")
            run = self.api.dag_run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return RunOutcome(dag_id, run_id, run["state"], time.monotonic() - started, seen)
            if time.monotonic() >= deadline:
                raise HarnessError(
                    f"Run {run_id} of {dag_id} did not finish within {timeout:g} s (state {run['state']}, "
                    f"tasks {last_states})"
                )
            time.sleep(poll_seconds)

    def component_log(self, name: str) -> str:
        """
        Return the whole stdout/stderr log of one component (``scheduler``, ``triggerer``...).

        :param name: the component.
        """
        path = self.component_log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_component_log(self, name: str, pattern: str, *, timeout: float) -> None:
        """
        Wait (bounded) until a component's log has a line matching ``pattern`` (a regular expression).

        :param name: the component.
        :param pattern: the regular expression.
        :param timeout: seconds.
        :raises HarnessError: on timeout or when a component exits.
        """
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while not compiled.search(self.component_log(name)):
            self._check_alive()
            if time.monotonic() >= deadline:
                raise HarnessError(f"No line matching {pattern!r} in the {name} log within {timeout:g} s")
            time.sleep(0.3)

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, *, timeout: float, map_index: int = -1
    ) -> None:
        """
        Wait (bounded) until a task instance is in ``state`` (e.g. ``deferred``).

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param state: the state to wait for.
        :param timeout: seconds.
        :param map_index: the map index (``-1`` when not mapped).
        :raises HarnessError: on timeout, or when the run ends first.
        """
        deadline = time.monotonic() + timeout
        current: str | None = None
        while True:
            self._check_alive()
            for instance in self.api.task_instances(dag_id, run_id):
                if instance["task_id"] == task_id and instance.get("map_index", -1) == map_index:
                    current = instance.get("state")
            if current == state:
                return
            run_state = self.api.dag_run(dag_id, run_id)["state"]
            if run_state in TERMINAL_RUN_STATES:
                raise HarnessError(f"Run {run_id} ended {run_state} before {task_id} was {state}")
            if time.monotonic() >= deadline:
                raise HarnessError(f"{task_id} of {run_id} was not {state} within {timeout:g} s ({current})")
            time.sleep(0.5)

    def stop(self, *, grace_seconds: float = 20.0) -> None:
        """
        Stop every component and every process they started; bounded by ``grace_seconds`` plus a few.

        :param grace_seconds: seconds between ``SIGTERM`` and ``SIGKILL``.
        """
        if self._api is not None:
            self._api.close()
            self._api = None
        if not self.processes:
            return
        with _shielded_from_interrupts(self.echo):
            killed = stop_processes(self.processes, grace_seconds=grace_seconds)
        if killed:
            self.echo(
                f"Killed {len(killed)} Airflow process(es) that did not stop within {grace_seconds:g} s"
            )
        self.processes = []

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _utc_now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
