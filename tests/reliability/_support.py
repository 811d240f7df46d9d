"""
Helpers of the fault matrix: a real Airflow (scheduler, DAG processor, triggerer and API server as
subprocesses; LocalExecutor, SQLite), built on the harness of ``tests/dags/test_kling_realtime.py``.

Beyond that harness this one can kill a component with ``SIGKILL`` (the process and every descendant, each
by its own pid) and start it again, and it reads what a run left behind: task instance states, the
scheduler's executor events, the task and trigger log files of each try, the trigger table.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
from dags.test_kling_realtime import AIRFLOW, COMPONENT_ARGUMENTS, COMPONENTS, AirflowDeployment, query

if TYPE_CHECKING:
    from collections.abc import Sequence

DAG_FILES = Path(__file__).parent / "dag_files"


class ReliabilityDeployment(AirflowDeployment):
    """:class:`AirflowDeployment`, plus killing a component with ``SIGKILL`` and starting it again."""

    def start(self) -> None:
        for name in COMPONENTS:
            self._start(name, name)

    def _start(self, name: str, log_name: str) -> None:
        log = (self.home / f"{log_name}.log").open("wb")
        self._logs.append(log)
        self.processes[name] = subprocess.Popen(
            [str(AIRFLOW), name, *COMPONENT_ARGUMENTS.get(name, ())],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> list[int]:
        """
        ``SIGKILL`` a component and every process it started, the component first; wait until all are gone.

        :param name: the component (``triggerer``...).
        :return: the pids killed.
        """
        process = self.processes[name]
        root = psutil.Process(process.pid)
        victims = [root, *root.children(recursive=True)]
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGKILL)
        _, alive = psutil.wait_procs(victims, timeout=15)
        assert not alive, f"still alive after SIGKILL: {alive}"
        process.wait(10)
        return [victim.pid for victim in victims]

    def restart(self, name: str, log_name: str) -> None:
        """
        Start a (killed) component again, logging to ``<log_name>.log`` in the Airflow home.

        :param name: the component.
        :param log_name: the new log file's name, without ``.log``.
        """
        assert self.processes[name].poll() is not None, f"airflow {name} is still running"
        self._start(name, log_name)

    # Reading the run ------------------------------------------------------------------------------

    def instances(self, dag_id: str, run_id: str) -> dict[str, tuple[str | None, int]]:
        """``{task_id: (state, try_number)}`` of one DAG run."""
        return {
            task_id: (state, try_number)
            for task_id, state, try_number in query(
                self.home,
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
                dag_id,
                run_id,
            )
        }

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = query(self.home, "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
        return rows[0][0] if rows else None

    def executor_event_seen(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> bool:
        """
        Whether the scheduler has processed the executor's ``success`` event of a (deferring) try's worker.

        A trigger that fires before that loses its try to an Airflow 3.3.2 race (see
        ``tests/e2e/conftest.py``), so a test holds the video until this is true.
        """
        return bool(
            re.search(
                r"Received executor event with state success for task instance TaskInstanceKey\("
                rf"dag_id='{dag_id}', task_id='{task_id}', run_id='{re.escape(run_id)}', "
                rf"try_number={try_number},",
                self.log("scheduler"),
            )
        )

    def deferred_and_seen(self, dag_id: str, run_id: str, expected: dict[str, int]) -> bool:
        """Whether each task is deferred in the given try, and its deferring worker's exit was processed."""
        instances = self.instances(dag_id, run_id)
        return all(
            instances.get(task_id) == ("deferred", try_number)
            and self.executor_event_seen(dag_id, run_id, task_id, try_number)
            for task_id, try_number in expected.items()
        )

    def trigger_of(self, dag_id: str, run_id: str, task_id: str) -> tuple[int | None, int | None]:
        """``(trigger_id, triggerer_id)`` of a deferred task (``None`` where there is none)."""
        rows = query(
            self.home,
            "SELECT t.id, t.triggerer_id FROM task_instance ti LEFT JOIN trigger t ON t.id = ti.trigger_id "
            "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = ?",
            dag_id,
            run_id,
            task_id,
        )
        return (rows[0][0], rows[0][1]) if rows else (None, None)

    def triggerer_jobs(self) -> list[int]:
        """The ids of every triggerer job, oldest first."""
        return [
            job_id
            for (job_id,) in query(
                self.home, "SELECT id FROM job WHERE job_type = 'TriggererJob' ORDER BY id"
            )
        ]

    def log_files(self, dag_id: str, task_id: str) -> dict[str, str]:
        """Every log file of a task (its tries, and the triggerers' logs of its triggers), by file name."""
        return {
            path.name: path.read_text(errors="replace")
            for path in sorted(self.home.glob(f"logs/dag_id={dag_id}/**/task_id={task_id}/**/*.log"))
        }

    def state_store(self, dag_id: str, task_id: str) -> list[tuple[str | None, Any]]:
        """``(key, value)`` of a task instance's ``task_state_store`` rows."""
        rows = query(self.home, "SELECT * FROM task_state_store")
        columns = [
            name for (_, name, *_) in query(self.home, "PRAGMA table_info(task_state_store)")
        ]  # the schema is new in 3.3: read it rather than assume it
        found: list[tuple[str | None, Any]] = []
        for row in rows:
            record = dict(zip(columns, row, strict=True))
            if record.get("dag_id") == dag_id and record.get("task_id") == task_id:
                found.append((record.get("key"), record.get("value")))
        return found


def try_logs(files: dict[str, str], attempt: int) -> str:
    """The worker log of one try (``attempt=N.log``)."""
    return files.get(f"attempt={attempt}.log", "")


def trigger_logs(files: dict[str, str], *, attempt: int | None = None) -> dict[str, str]:
    """The triggerers' log files of a task's triggers (``attempt=N.log.trigger.<job id>.log``)."""
    prefix = f"attempt={attempt}.log.trigger." if attempt is not None else "attempt="
    return {name: text for name, text in files.items() if name.startswith(prefix) and ".trigger." in name}


def count(pattern: str, texts: Sequence[str]) -> int:
    """How many times a regex matches in some texts."""
    return sum(len(re.findall(pattern, text)) for text in texts)


class AirflowRestApi:
    """
    A small client of the deployment's public REST API (``/api/v2``), as an admin of the simple auth manager.

    The API server generated the ``admin`` user's password into its home at startup; the client logs in
    with it (``POST /auth/token``) and sends the token as a bearer token. Every call is bounded.

    :param deployment: the running deployment.
    :param timeout: the timeout of one request, in seconds.
    """

    #: How many times a write that met a 500 "Database error" is sent again.
    DATABASE_ERROR_RETRIES = 3

    def __init__(self, deployment: AirflowDeployment, *, timeout: float = 30.0) -> None:
        self._writes = threading.Lock()
        #: The writes sent again after a 500 "Database error" (SQLite's lock), ``"<method> <path>"`` each.
        self.database_errors: list[str] = []
        self.base_url = f"http://127.0.0.1:{deployment.env['AIRFLOW__API__PORT']}"
        passwords = json.loads((deployment.home / "simple_auth_manager_passwords.json.generated").read_text())
        with httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False) as client:
            login = client.post("/auth/token", json={"username": "admin", "password": passwords["admin"]})
        assert login.status_code == 201, f"login answered {login.status_code}: {login.text[:500]}"
        self._client = httpx.Client(
            base_url=f"{self.base_url}/api/v2",
            timeout=timeout,
            trust_env=False,
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )

    @staticmethod
    def ready(deployment: AirflowDeployment) -> bool:
        """Whether the API server answers, and has written its admin's password."""
        if not (deployment.home / "simple_auth_manager_passwords.json.generated").exists():
            return False
        url = f"http://127.0.0.1:{deployment.env['AIRFLOW__API__PORT']}/api/v2/monitor/health"
        try:
            return httpx.get(url, timeout=5, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request (``path`` under ``/api/v2``); return the response, whatever its status."""
        return self._client.request(method, path, **kwargs)

    def call(self, method: str, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        """
        Send one request; assert its status; return its JSON body (``None`` if empty).

        Writes go one at a time, as one person's clicks would: on SQLite, concurrent writes of the API
        server's threads wait on each other's lock and can fail after its busy timeout (a 500 "Database
        error"). Such a write is sent again, at most :attr:`DATABASE_ERROR_RETRIES` times (each is
        idempotent: a state, a clear, a delete), and counted in :attr:`database_errors`.
        """
        if method == "GET":
            response = self.request(method, path, **kwargs)
        else:
            with self._writes:
                for _ in range(self.DATABASE_ERROR_RETRIES):
                    response = self.request(method, path, **kwargs)
                    if response.status_code != 500 or "Database error" not in response.text:
                        break
                    self.database_errors.append(f"{method} {path}")
                    time.sleep(1)
                else:
                    response = self.request(method, path, **kwargs)
        assert response.status_code == expect, (
            f"{method} {path} answered {response.status_code}, not {expect}: {response.text[:1000]}"
        )
        return response.json() if response.content else None

    def create_connection(self, conn_id: str, conn_type: str, *, host: str, password: str) -> None:
        body = {"connection_id": conn_id, "conn_type": conn_type, "host": host, "password": password}
        self.call("POST", "/connections", expect=201, json=body)

    def trigger(self, dag_id: str, run_id: str) -> None:
        """Create a manual DAG run without a logical date."""
        self.call("POST", f"/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, "logical_date": None})

    def set_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> list[dict[str, Any]]:
        """Mark a task instance ``success`` or ``failed`` by hand; return the instances the API changed."""
        body = self.call(
            "PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": state}
        )
        instances: list[dict[str, Any]] = body["task_instances"]
        return instances

    def clear(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Clear one task instance whatever its state (not a dry run); return the instances cleared."""
        body = self.call(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            json={"dry_run": False, "dag_run_id": run_id, "task_ids": [task_id], "only_failed": False},
        )
        instances: list[dict[str, Any]] = body["task_instances"]
        return instances

    def state_store_path(self, dag_id: str, run_id: str, task_id: str, key: str) -> str:
        return f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/state-store/{key}"

    def state_store_get(self, dag_id: str, run_id: str, task_id: str, key: str) -> Any:
        """A task instance's state-store value under ``key``, or ``None`` if the key is absent (404)."""
        response = self.request("GET", self.state_store_path(dag_id, run_id, task_id, key))
        if response.status_code == 404:
            return None
        assert response.status_code == 200, (
            f"GET state-store answered {response.status_code}: {response.text}"
        )
        return response.json()["value"]

    def state_store_delete(self, dag_id: str, run_id: str, task_id: str, key: str) -> None:
        self.call("DELETE", self.state_store_path(dag_id, run_id, task_id, key), expect=204)
