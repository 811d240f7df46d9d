"""
Real Airflow runs: ``airflow dags test`` in a subprocess, its own ``AIRFLOW_HOME``, against the simulator.

``airflow dags test`` (Airflow 3.3) runs each task through the task SDK's in-process supervisor and the
execution API, so ``task_state_store``, retries (``UP_FOR_RETRY`` after ``retry_delay``) and deferral all
behave as on a worker; it runs each trigger inline, on a fresh event loop, until its first event (it does
not enforce Airflow's defer timeout, which is why the trigger enforces its own). Each task's outcome is
read back from the run's metadata database and the simulators' records.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kling.testing import KlingSimulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.testing.s3 import LocalS3Server

pytestmark = pytest.mark.integration

DAG_FILES = Path(__file__).parent / "dag_files"
AIRFLOW = Path(sys.executable).parent / "airflow"
#: A distinctive key for the second simulator: any log line holding it has leaked it.
LEAKCHECK_KEY = "sk-e2e-LEAKCHECK-5d1c7a9e3f"
FAILURE_MESSAGE = "Simulated vendor failure: the render farm lost the job"


def airflow_env(home: Path, connections: dict[str, str]) -> dict[str, str]:
    """A clean environment for the ``airflow`` CLI: none of the test session's AIRFLOW_* settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **{f"AIRFLOW_CONN_{conn_id.upper()}": value for conn_id, value in connections.items()},
        }
    )
    return env


def airflow(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def failing_simulator() -> Iterator[KlingSimulator]:
    with KlingSimulator(api_key=LEAKCHECK_KEY, task_seconds=0.3) as simulator:
        simulator.fail_next_tasks(1, message=FAILURE_MESSAGE)
        yield simulator


def kling_conn(simulator: KlingSimulator) -> str:
    return json.dumps({"conn_type": "kling", "host": simulator.base_url, "password": simulator.api_key})


def prompts(simulator: KlingSimulator) -> Counter[str]:
    return Counter(body["input"]["prompt"] for body in simulator.submitted)


@pytest.fixture
def e2e_run(
    tmp_path: Path,
    kling_simulator: KlingSimulator,
    failing_simulator: KlingSimulator,
    local_s3: LocalS3Server,
    s3_bucket: str,
    s3_prefix: str,
) -> dict[str, Any]:
    kling_simulator.task_seconds = 1.5  # a sensor that runs right after its submit finds it running
    env = airflow_env(
        tmp_path,
        {
            "kling_default": kling_conn(kling_simulator),
            "kling_failing": kling_conn(failing_simulator),
            "aws_default": local_s3.airflow_connection_json(),
        },
    )
    migrated = airflow(env, "db", "migrate", timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    conf = json.dumps({"s3_bucket": s3_bucket, "s3_prefix": s3_prefix})
    ran = airflow(env, "dags", "test", "kling_e2e", "--conf", conf, timeout=240)
    (tmp_path / "dags-test.log").write_text(ran.stdout + ran.stderr)
    with sqlite3.connect(tmp_path / "airflow.db") as db:
        instances = {
            (task_id, map_index): (state, try_number)
            for task_id, map_index, state, try_number in db.execute(
                "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = 'kling_e2e'"
            )
        }
        xcoms = {
            (task_id, map_index): json.loads(value)
            for task_id, map_index, value in db.execute(
                "SELECT task_id, map_index, value FROM xcom"
                " WHERE dag_id = 'kling_e2e' AND key = 'return_value'"
            )
        }
        run_states = [
            state for (state,) in db.execute("SELECT state FROM dag_run WHERE dag_id = 'kling_e2e'")
        ]
    return {
        "returncode": ran.returncode,
        "log": ran.stdout + ran.stderr,
        "instances": instances,
        "xcoms": xcoms,
        "run_states": run_states,
    }


def test_airflow_dags_test_runs_every_path_against_the_simulator(
    e2e_run: dict[str, Any],
    kling_simulator: KlingSimulator,
    failing_simulator: KlingSimulator,
    s3_client: S3Client,
    s3_bucket: str,
    s3_prefix: str,
) -> None:
    log, instances, xcoms = e2e_run["log"], e2e_run["instances"], e2e_run["xcoms"]
    assert e2e_run["returncode"] == 0, log[-5000:]
    assert e2e_run["run_states"] == ["success"], log[-5000:]
    assert {key: state for key, (state, _) in instances.items()} == {
        ("submit", -1): "success",
        ("wait", -1): "success",
        ("submit_for_poking", -1): "success",
        ("wait_poking", -1): "success",
        ("to_s3", -1): "success",
        ("mapped", 0): "success",
        ("mapped", 1): "success",
        ("mapped", 2): "success",
        ("dies_after_submit", -1): "success",
        ("times_out", -1): "success",
        ("fails_once", -1): "success",
    }

    # The canonical three steps: submit -> sensor -> S3, one paid task, its video in the bucket.
    task_id = xcoms[("submit", -1)]
    [three_steps] = [task for task in kling_simulator.tasks if task.task_id == task_id]
    assert xcoms[("wait", -1)]["status"] == "Success"
    assert xcoms[("wait", -1)]["urls"] == list(three_steps.urls)
    assert f"Waiting for Kling task {task_id} in the triggerer" in log  # the sensor deferred
    [s3_uri] = xcoms[("to_s3", -1)]
    assert s3_uri == f"s3://{s3_bucket}/{s3_prefix}{task_id}/0.mp4"
    head = s3_client.head_object(Bucket=s3_bucket, Key=f"{s3_prefix}{task_id}/0.mp4")
    assert head["ContentLength"] > 1000

    # The poke-mode sensor waited on the worker for its own task.
    poked = xcoms[("submit_for_poking", -1)]
    assert xcoms[("wait_poking", -1)]["kling_task_id"] == poked
    assert xcoms[("wait_poking", -1)]["status"] == "Success"
    assert f"Kling task {poked} is Running" in log or f"Kling task {poked} is Pending" in log

    # Never pay twice: a try that died after its submit, and one that timed out, were both retried and
    # reattached to their task; the simulator counts exactly one submit for each prompt.
    assert prompts(kling_simulator) == {
        "three steps: a lighthouse at dawn": 1,
        "a poking sensor waits for this one": 1,
        "mapped 0": 1,
        "mapped 1": 1,
        "mapped 2": 1,
        "no double pay: the first try dies after its submit": 1,
        "no double pay: the first try times out": 1,
    }
    for retried in ("dies_after_submit", "times_out"):
        assert instances[(retried, -1)][1] == 2, f"{retried} should have needed a second try"
        result = xcoms[(retried, -1)]
        [task] = [task for task in kling_simulator.tasks if task.task_id == result["kling_task_id"]]
        assert result["urls"] == list(task.urls)  # the first (and only) task's video
        assert f"Reattaching to Kling task {task.task_id} of an earlier try" in log
    assert "injected: the worker died right after the submit" in log
    assert "did not finish within 0.6 s" in log

    # Dynamic mapping: one task per prompt, each traced back to its map index.
    external_ids = {
        body["input"]["prompt"]: body["parameters"]["external_task_id"] for body in kling_simulator.submitted
    }
    assert [external_ids[f"mapped {index}"].endswith(f"-m{index}-t1") for index in range(3)] == [True] * 3
    assert {xcoms[("mapped", index)]["status"] for index in range(3)} == {"Success"}

    # A failed Kling task fails its try with the vendor's message; the retry is the one case that pays again.
    assert f"failed: {FAILURE_MESSAGE}" in log
    assert instances[("fails_once", -1)][1] == 2
    assert prompts(failing_simulator) == {"the vendor fails this one once": 2}
    assert [body["parameters"]["external_task_id"][-3:] for body in failing_simulator.submitted] == [
        "-t1",
        "-t2",
    ]
    assert xcoms[("fails_once", -1)]["status"] == "Success"

    # The story is in the log, the key is not.
    assert "Submitted Kling task" in log
    assert "billed" in log
    assert LEAKCHECK_KEY not in log
