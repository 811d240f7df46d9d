"""
A test-only DAG of the e2e package (``tests/e2e/test_auth_failure_leaks_no_key.py``): every Kling task fails
with the provider's auth error, so that the test can read every page, log, table and file of a failed run and
look for the API key in them.

The real Airflow of ``tests/e2e/conftest.py`` loads this folder as a second DAG bundle (``e2e-test-dags``),
beside ``example_dags/``. The connections are created by the test (in the metadata database, through the
REST API, as a user would), with a distinctive password that must never show up anywhere; the key is not in
this file.

* ``submit_rejected``: the submit is refused with 401 (the key was never valid).
* ``submit_then_key_revoked``: the submit is accepted and the wait is deferred; the test then revokes the
  key, so the trigger's status query gets 401 in the triggerer; the retry's status query gets 401 on the
  worker.
* ``wait_for_made_up_task``: a sensor on a made-up (but well-formed) task id; its first status query on the
  worker gets a 503 the test injected, so it defers; the trigger's queries get 503 until the test lifts
  the fault, then 401 in the triggerer; the retry's first query gets 401 on the worker.

Each task has one retry, so every failure is seen in two tries.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.sensors.kling import KlingTaskSensor

DAG_ID: Final = "kling_e2e_auth_failure"
#: The connection whose key the API never accepted.
REJECTED_CONN_ID: Final = "kling_e2e_authfail"
#: The connection whose key the API accepts until the test revokes it.
REVOKED_CONN_ID: Final = "kling_e2e_authfail_revoked"
#: A well-formed task id that no API ever issued.
MADE_UP_TASK_ID: Final = "e2e0authfail0made0up0task0id"
SUBMIT_REJECTED: Final = "submit_rejected"
SUBMIT_THEN_KEY_REVOKED: Final = "submit_then_key_revoked"
WAIT_FOR_MADE_UP_TASK: Final = "wait_for_made_up_task"
TASK_IDS: Final = (SUBMIT_REJECTED, SUBMIT_THEN_KEY_REVOKED, WAIT_FOR_MADE_UP_TASK)
POLL_SECONDS: Final = 1.0
WAIT_TIMEOUT: Final = 300.0

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["kling", "e2e"],
    params={"scene": "a lighthouse on a cliff at dawn"},
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    KlingSubmitVideoOperator(
        task_id=SUBMIT_REJECTED,
        kling_conn_id=REJECTED_CONN_ID,
        prompt="{{ params.scene }}, run {{ run_id }}",
        aspect_ratio="16:9",
        duration=5,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        timeout=WAIT_TIMEOUT,
    )
    KlingSubmitVideoOperator(
        task_id=SUBMIT_THEN_KEY_REVOKED,
        kling_conn_id=REVOKED_CONN_ID,
        prompt="{{ params.scene }}, run {{ run_id }}",
        aspect_ratio="16:9",
        duration=5,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        timeout=WAIT_TIMEOUT,
    )
    KlingTaskSensor(
        task_id=WAIT_FOR_MADE_UP_TASK,
        kling_conn_id=REJECTED_CONN_ID,
        kling_task_id=MADE_UP_TASK_ID,
        poke_interval=POLL_SECONDS,
        timeout=WAIT_TIMEOUT,
    )
