"""
Test-only DAG for ``airflow dags test`` runs against the Kling simulator (``tests/dags/test_kling_dags.py``).

One run covers every path of issue 4 that needs a real Airflow: the canonical three steps (submit >> sensor
>> copy to S3), a poke-mode sensor, dynamic task mapping, a try that dies right after its submit and a try
that times out (both retried: the retry must reattach, never pay twice), and a Kling task that fails (its
retry is the one case that submits again). Each task has its own prompt so the test counts submits per task.

``airflow dags test`` runs the ready tasks one after the other, so the stages are chained: each sensor runs
right after its own submit, while the task is still running (a sensor that ran later would find it done).

Connections (set by the test): ``kling_default`` (a simulator), ``kling_failing`` (a second simulator told
to fail its next task), ``aws_default`` (a local S3 server). Run conf: ``s3_bucket`` and ``s3_prefix``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.sensors.kling import KlingTaskSensor
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

FAST: dict[str, Any] = {"poll_interval": 0.2, "timeout": 60}
RETRY_ONCE: dict[str, Any] = {"retries": 1, "retry_delay": timedelta(seconds=1)}


class DiesAfterSubmit(KlingSubmitVideoOperator):
    """The first try dies right after its (recorded, billed) submit, as a lost worker would."""

    def execute(self, context: Any) -> Any:
        self.try_number = context["ti"].try_number
        return super().execute(context)

    def defer(self, **kwargs: Any) -> Any:
        if self.try_number == 1:
            raise RuntimeError("injected: the worker died right after the submit")
        return super().defer(**kwargs)


with DAG(
    dag_id="kling_e2e",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    params={"s3_bucket": "kling-tests", "s3_prefix": "e2e/"},
    tags=["kling", "test"],
) as dag:
    submit = KlingSubmitVideoOperator(
        task_id="submit", prompt="three steps: a lighthouse at dawn", aspect_ratio="16:9", duration=5
    )
    wait = KlingTaskSensor(
        task_id="wait", kling_task_id="{{ ti.xcom_pull('submit') }}", poke_interval=0.2, timeout=60
    )
    to_s3 = KlingToS3Operator(
        task_id="to_s3",
        kling_task_id="{{ ti.xcom_pull('submit') }}",
        s3_bucket="{{ params.s3_bucket }}",
        s3_key="{{ params.s3_prefix }}{kling_task_id}/{index}.mp4",
    )
    submit_for_poking = KlingSubmitVideoOperator(
        task_id="submit_for_poking", prompt="a poking sensor waits for this one", aspect_ratio="1:1"
    )
    wait_poking = KlingTaskSensor(
        task_id="wait_poking",
        kling_task_id="{{ ti.xcom_pull('submit_for_poking') }}",
        deferrable=False,
        poke_interval=0.2,
        timeout=60,
    )
    mapped = KlingSubmitVideoOperator.partial(
        task_id="mapped", aspect_ratio="1:1", wait_for_completion=True, trigger_rule="all_done", **FAST
    ).expand(prompt=["mapped 0", "mapped 1", "mapped 2"])
    dies_after_submit = DiesAfterSubmit(
        task_id="dies_after_submit",
        prompt="no double pay: the first try dies after its submit",
        aspect_ratio="9:16",
        wait_for_completion=True,
        trigger_rule="all_done",
        **FAST,
        **RETRY_ONCE,
    )
    times_out = KlingSubmitVideoOperator(
        task_id="times_out",
        prompt="no double pay: the first try times out",
        aspect_ratio="16:9",
        wait_for_completion=True,
        poll_interval=0.2,
        timeout=0.6,
        trigger_rule="all_done",
        **RETRY_ONCE,
    )
    fails_once = KlingSubmitVideoOperator(
        task_id="fails_once",
        kling_conn_id="kling_failing",
        prompt="the vendor fails this one once",
        aspect_ratio="16:9",
        wait_for_completion=True,
        trigger_rule="all_done",
        **FAST,
        **RETRY_ONCE,
    )
    submit >> wait >> to_s3 >> submit_for_poking >> wait_poking
    wait_poking >> [mapped, dies_after_submit, times_out, fails_once]
