"""
### Kling image to video: first and last frame from S3

Animates between two images kept in S3: `image_list` accepts `s3://bucket/key`. Before anything is
submitted, each image is checked against the API's rules from the object's header (R18: JPEG or PNG, at
most 10 MB, at least 300 px a side, aspect ratio between 1:2.5 and 2.5:1), so an unusable input fails the
task at no cost; the API then receives each image as bare base64.

Inputs: `s3://<kling_video_bucket>/kling-inputs/first_frame.png` and `end_frame.png`.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

POLL_SECONDS = float(os.environ.get("KLING_EXAMPLE_POLL_SECONDS", "30"))
BUCKET = "{{ var.value.get('kling_video_bucket', 'kling-videos') }}"

with DAG(
    dag_id="example_kling_image_to_video",
    description="A Kling video between a first and an end frame kept in S3",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "kling"],
):
    # [START howto_operator_kling_s3_images]
    generate = KlingSubmitVideoOperator(
        task_id="generate",
        prompt="The camera glides forward as day turns to dusk, smooth and continuous",
        image_list=[
            {"image_url": f"s3://{BUCKET}/kling-inputs/first_frame.png", "type": "first_frame"},
            {"image_url": f"s3://{BUCKET}/kling-inputs/end_frame.png", "type": "end_frame"},
        ],
        mode="pro",
        aspect_ratio="16:9",
        duration=5,
        aws_conn_id="aws_default",  # reads the s3:// inputs
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        pool="kling",
    )
    # [END howto_operator_kling_s3_images]

    KlingToS3Operator(
        task_id="land_in_s3",
        kling_task_id="{{ ti.xcom_pull(task_ids='generate')['kling_task_id'] }}",
        s3_bucket=BUCKET,
        s3_key="kling/image-to-video/{{ run_id | replace(':', '_') | replace('+', '_') }}/{index}.mp4",
    ).set_upstream(generate)
