"""
Test-only DAGs of the Kling view's browser tests (``tests/ui``), loaded by their real Airflow.

* ``kling_ui_gallery``: generate a video (waiting in the triggerer) from the prompt in the run's conf, then
  land it in S3: a finished, landed, playable card.
* ``kling_ui_in_flight``: generate a video the simulator holds ``Running``: a card in flight.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

GALLERY_DAG = "kling_ui_gallery"
IN_FLIGHT_DAG = "kling_ui_in_flight"
POLL_SECONDS = float(os.environ.get("KLING_EXAMPLE_POLL_SECONDS", "1"))
PROMPT = "{{ dag_run.conf.get('prompt', 'a lighthouse at dawn') }}"

with DAG(dag_id=GALLERY_DAG, schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["kling"]):
    generate = KlingSubmitVideoOperator(
        task_id="generate",
        prompt=PROMPT,
        aspect_ratio="16:9",
        duration=5,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        timeout=600,
    )
    land = KlingToS3Operator(
        task_id="land",
        kling_task_id="{{ ti.xcom_pull(task_ids='generate')['kling_task_id'] }}",
        s3_bucket="{{ var.value.get('kling_video_bucket', 'kling-videos') }}",
        asset_alias=None,
    )
    generate >> land

with DAG(dag_id=IN_FLIGHT_DAG, schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["kling"]):
    KlingSubmitVideoOperator(
        task_id="generate",
        prompt=PROMPT,
        aspect_ratio="9:16",
        mode="pro",
        duration=10,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )
