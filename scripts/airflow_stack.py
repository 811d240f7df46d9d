"""
A real Airflow on 127.0.0.1, started, driven and stopped from Python: the harness of the demo and e2e tests.

:class:`AirflowStack` runs the Airflow 3 components one by one, each its own process group, against an
``AIRFLOW_HOME`` it owns, with ``example_dags/`` as the DAGs folder. Two topologies:

* the default, for a newcomer's machine: ``scheduler``, ``dag-processor``, ``triggerer``, ``api-server``
  on a SQLite metadata database in the home, the ``LocalExecutor`` with a capped ``[core] parallelism``;
* :class:`DistributedTopology` (``StackSettings(topology=...)``), as data-platform teams run Airflow: a
  fresh PostgreSQL database of its own (created and dropped here, :class:`stack_services.PostgresDatabase`),
  the ``CeleryExecutor`` with a Redis broker the harness starts itself (:class:`stack_services.RedisBroker`,
  on a free port, no persistence) and Celery's result backend in the same database, several Celery workers
  (separate processes) and several triggerers, besides the scheduler, DAG processor and API server.

Everything is configured by environment variables (``AIRFLOW__SECTION__KEY``, connections as
``AIRFLOW_CONN_<ID>`` JSON, variables as ``AIRFLOW_VAR_<NAME>``): nothing is written to ``airflow.cfg``.
Only the API server (and the broker) listen, on free ports of 127.0.0.1; the log servers of the scheduler,
triggerers and workers (which bind every interface) are not started, because the API server reads the local
log files directly.

Every wait is bounded. :meth:`AirflowStack.stop` stops what it started, also on ``Ctrl-C`` or ``SIGTERM``
(see :func:`handle_termination`): ``SIGTERM`` to every process group, then ``SIGKILL`` to what is left
(including task processes that moved to their own process group), then the broker, then drops the database.
Children get ``PR_SET_PDEATHSIG`` so they also go when the harness process is killed outright.

The pieces live in modules of one idea each, re-exported here: :mod:`stack_processes` (child processes),
:mod:`airflow_api` (the REST client), :mod:`stack_services` (PostgreSQL and Redis).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
from airflow_api import REPORTED_STATES, TERMINAL_RUN_STATES, AirflowApi, RunOutcome
from stack_processes import (
    HOST,
    LOG_TAIL_BYTES,
    Echo,
    HarnessError,
    ManagedProcess,
    free_port,
    handle_termination,
    shielded_from_interrupts,
    stop_processes,
)
from stack_services import PostgresDatabase, RedisBroker
from stack_topology import (
    COMPONENTS,
    EXAMPLE_DAGS_FOLDER,
    REPO_ROOT,
    DistributedTopology,
    StackSettings,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "COMPONENTS",
    "EXAMPLE_DAGS_FOLDER",
    "HEALTH_COMPONENTS",
    "HOST",
    "REPO_ROOT",
    "TERMINAL_RUN_STATES",
    "AirflowApi",
    "AirflowStack",
    "DistributedTopology",
    "Echo",
    "HarnessError",
    "ManagedProcess",
    "PostgresDatabase",
    "RedisBroker",
    "RunOutcome",
    "StackSettings",
    "free_port",
    "handle_termination",
    "stop_processes",
]

#: Health entries of ``/api/v2/monitor/health`` that must be ``healthy``.
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
_INHERITED_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")


class AirflowStack:
    """
    A real Airflow (scheduler, DAG processor, triggerer(s), API server, Celery workers if any) on 127.0.0.1.

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
        topology = settings.topology
        #: The distributed topology's own database and broker (``None`` in the embedded one).
        self.database = PostgresDatabase(topology.postgres_server_url) if topology else None
        self.broker = RedisBroker(self.home / "broker", binary=topology.redis_server) if topology else None

    @property
    def components(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The components this stack starts: ``(name, airflow CLI arguments)``, in order."""
        topology = self.settings.topology
        return topology.components() if topology else COMPONENTS

    @property
    def description(self) -> str:
        """One line saying what runs (no secret in it)."""
        topology = self.settings.topology
        if topology is None or self.database is None:
            return f"SQLite, LocalExecutor (parallelism {self.settings.parallelism}), one triggerer"
        return (
            f"PostgreSQL (database {self.database.name}), CeleryExecutor with Redis on 127.0.0.1, "
            f"{topology.celery_workers} workers x {topology.worker_concurrency} slots, "
            f"{topology.triggerers} triggerers"
        )

    def process(self, name: str) -> ManagedProcess:
        """Return the running component called ``name`` (``triggerer-1``, ``celery-worker-2``...).

        :param name: the component.
        :raises KeyError: when no such component was started.
        """
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    def kill(self, name: str, *, timeout: float = 15.0) -> list[int]:
        """
        ``SIGKILL`` a component and every process it started, each by its own pid; wait until all are gone.

        The dead component stays in :attr:`processes`, where every wait of the harness checks that all
        components run: :meth:`forget` it to go on without it.

        :param name: the component.
        :param timeout: seconds to wait for the processes to be gone.
        :return: the pids killed, the component's first.
        """
        victims = self.process(name).tree()
        for victim in victims:
            with contextlib.suppress(psutil.Error):
                victim.send_signal(signal.SIGKILL)
        _, alive = psutil.wait_procs(victims, timeout=timeout)
        if alive:
            raise HarnessError(f"still alive {timeout:g} s after SIGKILL: {alive}")
        process = self.process(name)
        if process.popen is not None:
            process.popen.wait(timeout=timeout)
        return [victim.pid for victim in victims]

    def restart(self, name: str) -> ManagedProcess:
        """Start a dead (killed and forgotten) component again, as it was started; its log is appended to.

        :param name: the component.
        :raises HarnessError: when it still runs.
        """
        if any(process.name == name for process in self.processes):
            raise HarnessError(f"{name} still runs")
        return self._start_component(name, dict(self.components)[name], self.env())

    def _start_component(self, name: str, args: tuple[str, ...], env: Mapping[str, str]) -> ManagedProcess:
        process = ManagedProcess(
            name,
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=env,
            log_path=self.component_log_dir / f"{name}.log",
            cwd=self.home,
        )
        process.start()
        self.processes.append(process)
        return process

    def forget(self, name: str) -> ManagedProcess:
        """Drop a dead component from :attr:`processes` (so health checks stop expecting it); return it.

        :param name: the component.
        """
        process = self.process(name)
        if process.alive:
            raise HarnessError(f"{name} still runs: kill it first")
        self.processes.remove(process)
        return process

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
        if self.settings.topology and self.database and self.broker:
            env.update(self.settings.topology.env(self.database, self.broker))
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
            output = (error.stdout or b"")[-LOG_TAIL_BYTES:]
            text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
            raise HarnessError(
                f"airflow {' '.join(args)} did not finish within {timeout:g} s:\n{text}"
            ) from error
        if check and result.returncode != 0:
            raise HarnessError(
                f"airflow {' '.join(args)} exited with {result.returncode}:\n"
                f"{(result.stdout + result.stderr)[-LOG_TAIL_BYTES:]}"
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
        if self.database is None:
            self.echo(f"Airflow home {self.home}: creating the metadata database (SQLite)")
        else:
            self.database.create()
            self.echo(f"Airflow home {self.home}: created PostgreSQL database {self.database.name}")
        self.run_cli("db", "migrate", timeout=300.0)

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
            if self.broker is not None:
                self.broker.start()
                self.echo(f"Started the Celery broker: redis-server on 127.0.0.1:{self.broker.port}")
            env = self.env()
            for name, args in self.components:
                self._start_component(name, args, env)
            names = ", ".join(name for name, _args in self.components)
            self.echo(f"Started Airflow's {names} ({self.description}); waiting until healthy")
            self.wait_healthy(timeout=timeout)
            for name, args in self.components:
                if args[:2] == ("celery", "worker"):
                    self.wait_for_component_log(name, r"\bready\.", timeout=timeout)
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

    def check_alive(self) -> None:
        """Raise :class:`HarnessError` (with its log's tail) if a component has exited."""
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
            self.check_alive()
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
            self.check_alive()
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
            self.check_alive()
            for instance in self.api.task_instances(dag_id, run_id):
                key = instance["task_id"]
                if instance.get("map_index", -1) >= 0:
                    key = f"{key}[{instance['map_index']}]"
                state = instance.get("state") or "none"
                if state not in seen.setdefault(key, []):
                    seen[key].append(state)
                if last_states.get(key) != state:
                    last_states[key] = state
                    if state in REPORTED_STATES:
                        self.echo(f"  {key}: {REPORTED_STATES[state]}")
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
            self.check_alive()
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
            self.check_alive()
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
        with shielded_from_interrupts(self.echo):
            if self.processes:
                killed = stop_processes(self.processes, grace_seconds=grace_seconds)
                if killed:
                    self.echo(
                        f"Killed {len(killed)} Airflow process(es) that did not stop within "
                        f"{grace_seconds:g} s"
                    )
                self.processes = []
            if self.broker is not None:
                self.broker.stop()
            if self.database is not None and self.database.created:
                self.database.drop()
                self.echo(f"Dropped PostgreSQL database {self.database.name}")

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _utc_now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
