"""
Issue 10, item 5 in a real ``airflow dags test`` run: a deferrable ``KlingTaskSensor`` with ``soft_fail``,
``never_fail`` or ``silent_fail`` ends in the same state, after the same number of tries, as the poke-mode
sensor with the same flag waiting for the same Kling task (``dag_files/kling_sensor_fail_modes.py``).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from dags.test_kling_dags import airflow, airflow_env, kling_conn

from airflow_provider_kling.hooks.kling import KlingHook

if TYPE_CHECKING:
    from airflow_provider_kling.testing import KlingSimulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAG_FILES = Path(__file__).parent / "dag_files"
DAG_ID = "kling_sensor_fail_modes"
FLAGS = ("no_flag", "soft_fail", "never_fail", "silent_fail")
TEXT_TO_VIDEO = {
    "model": "kling-v3-omni",
    "input": {"prompt": "a lighthouse"},
    "parameters": {"aspect_ratio": "16:9"},
}
#: What poke mode does (``BaseSensorOperator.execute``): (state, tries) with one retry allowed.
POKE_MODE = {
    ("failed", "no_flag"): ("failed", 2),  # KlingTaskFailedError: retried
    ("failed", "soft_fail"): ("failed", 2),  # soft_fail covers the timeout, not a poke's errors
    ("failed", "never_fail"): ("skipped", 1),
    ("failed", "silent_fail"): ("failed", 1),  # logged and polled until the timeout: not retried
    ("slow", "no_flag"): ("failed", 1),
    ("slow", "soft_fail"): ("skipped", 1),
    ("slow", "never_fail"): ("failed", 1),  # never_fail covers a poke's errors, not the timeout
    ("slow", "silent_fail"): ("failed", 1),
}


def submit(simulator: KlingSimulator, *, seconds: float, fail: bool = False) -> str:
    simulator.task_seconds = seconds
    if fail:
        simulator.fail_next_tasks(1, message="moderation")
    with KlingHook() as hook:
        return hook.submit_task(TEXT_TO_VIDEO)


@pytest.fixture
def fail_modes_run(tmp_path: Path, kling_simulator: KlingSimulator, kling_connection: str) -> dict[str, Any]:
    conf = {
        "failed": submit(kling_simulator, seconds=0, fail=True),
        "slow": submit(kling_simulator, seconds=600),
    }
    kling_simulator.task_seconds = 2.0
    kling_simulator.fail_next_tasks(len(FLAGS), message="fails while the sensor waits")
    env = airflow_env(tmp_path, {"kling_default": kling_conn(kling_simulator)})
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAG_FILES)
    migrated = airflow(env, "db", "migrate", timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    ran = airflow(env, "dags", "test", DAG_ID, "--conf", json.dumps(conf), timeout=240)
    log = ran.stdout + ran.stderr
    (tmp_path / "dags-test.log").write_text(log)
    with sqlite3.connect(tmp_path / "airflow.db") as db:
        instances = {
            task_id: (state, try_number)
            for task_id, state, try_number in db.execute(
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ?", (DAG_ID,)
            )
        }
    return {"log": log, "instances": instances}


def test_deferrable_sensors_end_as_poke_mode_sensors_in_a_real_run(fail_modes_run: dict[str, Any]) -> None:
    log, instances = fail_modes_run["log"], fail_modes_run["instances"]
    assert all(instances[f"submit_fails_later__{flag}"] == ("success", 1) for flag in FLAGS), instances

    poke_mode = {
        (situation, flag): instances[f"{situation}__{flag}__poke"]
        for situation in ("failed", "slow")
        for flag in FLAGS
    }
    deferrable = {
        (situation, flag): instances[f"{situation}__{flag}__deferrable"]
        for situation in ("failed", "slow")
        for flag in FLAGS
    }
    # Seen by the trigger rather than the first poke: compared with poke mode on a failed task.
    fails_later = {("failed", flag): instances[f"fails_later__{flag}__deferrable"] for flag in FLAGS}

    assert poke_mode == POKE_MODE, log[-5000:]
    assert deferrable == poke_mode, log[-5000:]
    assert fails_later == {key: poke_mode[key] for key in fails_later}, log[-5000:]
    # The deferrable sensors did defer: on the slow task, and on each task that failed later.
    assert log.count("in the triggerer: a status query every 0.3 s, for up to 1 s") >= len(FLAGS)
    assert log.count("in the triggerer: a status query every 0.3 s, for up to 20 s") >= len(FLAGS)
    assert "fails while the sensor waits" in log
