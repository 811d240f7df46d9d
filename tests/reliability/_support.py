"""
Helpers of the fault matrix: a real Airflow (scheduler, DAG processor, triggerer and API server as
subprocesses; LocalExecutor, SQLite), built on the harness of ``tests/dags/test_kling_realtime.py``.

Beyond that harness this one can kill a component with ``SIGKILL`` (the process and every descendant, each
by its own pid) and start it again, and it reads what a run left behind: task instance states, the
scheduler's executor events, the task and trigger log files of each try, the trigger table.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

    def state_store(self, dag_id: str, task_id: str) -> list[tuple[str, Any]]:
        """``(key, value)`` of a task instance's ``task_state_store`` rows."""
        rows = query(self.home, "SELECT * FROM task_state_store")
        columns = [
            name for (_, name, *_) in query(self.home, "PRAGMA table_info(task_state_store)")
        ]  # the schema is new in 3.3: read it rather than assume it
        found = []
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
