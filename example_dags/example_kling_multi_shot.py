"""
### Kling multi-shot story

A short story told in three shots (`multi_shot: true`, `shot_type: customize`): each shot has its own
prompt and length, and the lengths add up to the video's `duration` (R8..R11, checked before anything is
submitted). The first shot puts a character from S3 on screen with `<<<image_1>>>` (R12: the reference
needs an `image_list` entry).

Input: `s3://<kling_video_bucket>/kling-inputs/character.png`.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.sensors.kling import KlingTaskSensor
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

POLL_SECONDS = float(os.environ.get("KLING_EXAMPLE_POLL_SECONDS", "30"))
BUCKET = "{{ var.value.get('kling_video_bucket', 'kling-videos') }}"

with DAG(
    dag_id="example_kling_multi_shot",
    description="A three-shot Kling story with a character from S3",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "kling"],
):
    # [START howto_operator_kling_multi_shot]
    submit = KlingSubmitVideoOperator(
        task_id="submit",
        multi_shot=True,
        shot_type="customize",
        multi_prompt=[
            {"index": 1, "prompt": "<<<image_1>>> waits at a rainy bus stop at night", "duration": "3"},
            {"index": 2, "prompt": "A bus pulls up, its headlights flooding the wet street", "duration": "2"},
            {"index": 3, "prompt": "Close-up: the character smiles as the doors open", "duration": "3"},
        ],
        image_list=[{"image_url": f"s3://{BUCKET}/kling-inputs/character.png"}],
        duration=8,
        aspect_ratio="16:9",
        mode="pro",
        sound="on",
        pool="kling",
    )
    # [END howto_operator_kling_multi_shot]

    wait = KlingTaskSensor(
        task_id="wait",
        kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
        poke_interval=POLL_SECONDS,
        pool="kling",
    )
    land = KlingToS3Operator(
        task_id="land_in_s3",
        kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
        s3_bucket=BUCKET,
        s3_key="kling/multi-shot/{kling_task_id}/{index}.mp4",
    )
    submit >> wait >> land
