"""
Test-only DAG for a real scheduler, triggerer and LocalExecutor (``tests/dags/test_kling_realtime.py``).

The canonical three steps (submit >> deferrable sensor in the triggerer >> copy to S3), and a task whose
first try's worker process dies (``os._exit``) right after the submit: the retry must find the task in
``task_state_store``, reattach while it is still running, and wait for it in the triggerer.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.sensors.kling import KlingTaskSensor
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator


class WorkerDiesAfterSubmit(KlingSubmitVideoOperator):
    """The first try's process exits hard right after its (recorded, billed) submit: a lost worker."""

    def execute(self, context: Any) -> Any:
        self.try_number = context["ti"].try_number
        return super().execute(context)

    def defer(self, **kwargs: Any) -> Any:
        if self.try_number == 1:
            self.log.error("Injected crash: the worker process exits now, after the submit")
            os._exit(1)
        return super().defer(**kwargs)


with DAG(
    dag_id="kling_realtime",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    params={"s3_bucket": "kling-tests", "s3_prefix": "realtime/"},
    tags=["kling", "test"],
) as dag:
    submit = KlingSubmitVideoOperator(
        task_id="submit", prompt="three steps, for real: a lighthouse at dawn", aspect_ratio="16:9"
    )
    wait = KlingTaskSensor(
        task_id="wait", kling_task_id="{{ ti.xcom_pull('submit') }}", poke_interval=0.5, timeout=120
    )
    to_s3 = KlingToS3Operator(
        task_id="to_s3",
        kling_task_id="{{ ti.xcom_pull('submit') }}",
        s3_bucket="{{ params.s3_bucket }}",
        s3_key="{{ params.s3_prefix }}{kling_task_id}/{index}.mp4",
    )
    submit >> wait >> to_s3

    WorkerDiesAfterSubmit(
        task_id="worker_dies_after_submit",
        prompt="no double pay, for real: the worker dies after the submit",
        aspect_ratio="9:16",
        wait_for_completion=True,
        poll_interval=0.5,
        timeout=120,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
