"""
A real Airflow: scheduler, DAG processor, triggerer and API server (LocalExecutor, SQLite) as subprocesses.

``airflow dags test`` runs triggers inline and every task in one process; this test runs the canonical
three-step DAG the way a deployment does (the sensor's trigger in the triggerer process, each task in its
own supervised worker process) and kills a worker process right after its submit (``os._exit``): the retry
must reattach to the running task through ``task_state_store`` and the simulator must count one submit.

Everything binds 127.0.0.1 on free ports (the scheduler and triggerer run without their log servers,
which would bind every interface; the test reads the log files), parallelism is 2, and every component
is stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import psutil
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.testing import KlingSimulator
    from airflow_provider_kling.testing.s3 import LocalS3Server

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DAG_FILES = Path(__file__).parent / "realtime_dag_files"
AIRFLOW = Path(sys.executable).parent / "airflow"
DAG_ID = "kling_realtime"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Extra arguments of the components: no log server (Airflow's binds every interface on a fixed port).
COMPONENT_ARGUMENTS = {"scheduler": ("--skip-serve-logs",), "triggerer": ("--skip-serve-logs",)}
#: Bounds of the whole run, in seconds.
STARTUP_TIMEOUT = 120.0
RUN_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_env(home: Path, connections: dict[str, str]) -> dict[str, str]:
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__CAPACITY": "50",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **{f"AIRFLOW_CONN_{conn_id.upper()}": value for conn_id, value in connections.items()},
        }
    )
    return env


class AirflowDeployment:
    """The four long-running components, each in its own process group, logs in the Airflow home."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self) -> None:
        for name in COMPONENTS:
            log = (self.home / f"{name}.log").open("wb")
            self._logs.append(log)
            self.processes[name] = subprocess.Popen(
                [str(AIRFLOW), name, *COMPONENT_ARGUMENTS.get(name, ())],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """SIGTERM every component's group and every descendant (task processes start groups of their own)."""
        descendants: list[psutil.Process] = []
        for process in self.processes.values():
            with contextlib.suppress(psutil.Error):
                descendants.extend(psutil.Process(process.pid).children(recursive=True))
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        _, alive = psutil.wait_procs(descendants, timeout=20)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        for log in self._logs:
            log.close()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"airflow {name} exited early:\n{self.log(name)[-3000:]}"

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")

    def task_logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.home.glob("logs/**/*.log")))

    def listening(self) -> set[tuple[str, str, int]]:
        """``(process name, address, port)`` of every listening socket of the components and descendants."""
        found = set()
        for process in self.processes.values():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(process.pid)
                for member in (root, *root.children(recursive=True)):
                    with contextlib.suppress(psutil.Error):
                        for conn in member.net_connections(kind="inet"):
                            if conn.status == psutil.CONN_LISTEN:
                                found.add((member.name(), conn.laddr.ip, conn.laddr.port))
        return found


def query(home: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(home / "airflow.db", timeout=30)) as db:
        return db.execute(sql, args).fetchall()


def wait_for(condition: Any, *, timeout: float, what: str, deployment: AirflowDeployment) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.check_alive()
        with contextlib.suppress(sqlite3.OperationalError):  # a table not created yet, or locked
            if result := condition():
                return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def deployment(
    tmp_path: Path, kling_simulator: KlingSimulator, local_s3: LocalS3Server
) -> Iterator[AirflowDeployment]:
    connections = {
        "kling_default": json.dumps(
            {"conn_type": "kling", "host": kling_simulator.base_url, "password": kling_simulator.api_key}
        ),
        "aws_default": local_s3.airflow_connection_json(),
    }
    env = airflow_env(tmp_path, connections)
    migrated = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    airflow = AirflowDeployment(tmp_path, env)
    airflow.start()
    try:
        yield airflow
    finally:
        airflow.stop()


def test_real_scheduler_and_triggerer_run_the_three_steps_and_survive_a_dead_worker(
    deployment: AirflowDeployment,
    kling_simulator: KlingSimulator,
    s3_client: S3Client,
    s3_bucket: str,
    s3_prefix: str,
) -> None:
    # Tasks finish only when the test moves the simulator's clock: the retry surely finds its task
    # Running, and no trigger fires before the scheduler has processed the deferring worker's exit (an
    # Airflow 3.3.2 race fails a try whose trigger fires before that, see tests/e2e/conftest.py).
    kling_simulator.task_seconds = 3600
    home = deployment.home
    wait_for(
        lambda: query(home, "SELECT 1 FROM dag WHERE dag_id = ? AND is_stale = 0", DAG_ID),
        timeout=STARTUP_TIMEOUT,
        what="the DAG processor to register the DAG",
        deployment=deployment,
    )
    conf = json.dumps({"s3_bucket": s3_bucket, "s3_prefix": s3_prefix})
    triggered = subprocess.run(
        [str(AIRFLOW), "dags", "trigger", DAG_ID, "--conf", conf],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert triggered.returncode == 0, triggered.stderr[-3000:]
    deferred = {("wait", 1), ("worker_dies_after_submit", 2)}
    wait_for(
        lambda: (
            deferred
            <= set(
                query(
                    home,
                    "SELECT task_id, try_number FROM task_instance WHERE dag_id = ? AND state = 'deferred'",
                    DAG_ID,
                )
            )
            and all(
                re.search(
                    rf"Received executor event with state success for task instance TaskInstanceKey\("
                    rf"dag_id='{DAG_ID}', task_id='{task_id}', run_id='[^']+', try_number={try_number},",
                    deployment.log("scheduler"),
                )
                for task_id, try_number in deferred
            )
        ),
        timeout=RUN_TIMEOUT,
        what="the sensor and the reattached retry to be deferred, their workers' exits processed",
        deployment=deployment,
    )
    held = wait_for(
        lambda: query(home, "SELECT count(*) FROM trigger WHERE triggerer_id IS NOT NULL")[0][0] == 2,
        timeout=60,
        what="the triggerer to pick up both triggers",
        deployment=deployment,
    )
    assert held
    kling_simulator.advance_time(7200)  # both tasks succeed; the triggers see it on their next poll

    state = wait_for(
        lambda: next(
            (
                s
                for (s,) in query(home, "SELECT state FROM dag_run WHERE dag_id = ?", DAG_ID)
                if s != "running" and s != "queued"
            ),
            None,
        ),
        timeout=RUN_TIMEOUT,
        what="the DAG run to finish",
        deployment=deployment,
    )
    instances = {
        task_id: (ti_state, try_number)
        for task_id, ti_state, try_number in query(
            home, "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ?", DAG_ID
        )
    }
    task_logs = deployment.task_logs()
    assert state == "success", f"{instances}\n{task_logs[-5000:]}\n{deployment.log('triggerer')[-3000:]}"
    assert instances == {
        "submit": ("success", 1),
        "wait": ("success", 1),
        "to_s3": ("success", 1),
        "worker_dies_after_submit": ("success", 2),
    }

    # One paid task per prompt: the dead worker's retry reattached instead of paying again.
    assert Counter(body["input"]["prompt"] for body in kling_simulator.submitted) == {
        "three steps, for real: a lighthouse at dawn": 1,
        "no double pay, for real: the worker dies after the submit": 1,
    }
    assert "Injected crash: the worker process exits now" in task_logs
    assert "Reattaching to Kling task" in task_logs
    assert re.search(r"Reattaching to Kling task \w+ of an earlier try: it is (Pending|Running)", task_logs)

    # The sensor and the reattached wait both ran in the triggerer process, not in a worker.
    triggerer_and_task_logs = deployment.log("triggerer") + task_logs
    assert "Kling task" in triggerer_and_task_logs
    assert "s of waiting" in triggerer_and_task_logs
    xcoms = {
        task_id: json.loads(value)
        for task_id, value in query(
            home, "SELECT task_id, value FROM xcom WHERE dag_id = ? AND key = 'return_value'", DAG_ID
        )
    }
    kling_task_id = xcoms["submit"]
    assert xcoms["wait"]["kling_task_id"] == kling_task_id
    assert xcoms["wait"]["status"] == "Success"
    assert xcoms["to_s3"] == [f"s3://{s3_bucket}/{s3_prefix}{kling_task_id}/0.mp4"]
    assert (
        s3_client.head_object(Bucket=s3_bucket, Key=f"{s3_prefix}{kling_task_id}/0.mp4")["ContentLength"]
        > 1000
    )
    assert kling_simulator.api_key not in task_logs
    # Every server of the deployment (the API server; no log servers) listens on 127.0.0.1 only.
    listening = deployment.listening()
    assert listening, "no listening socket found: the API server should be one"
    assert {address for _, address, _ in listening} == {"127.0.0.1"}, listening
