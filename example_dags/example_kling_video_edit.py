"""
### Kling video editing: restyle a video kept in S3

Edits an existing video (`refer_type: base`): the result keeps the input's length and framing, so
`aspect_ratio` and `duration` are left out (R4, R5), and the input's sound can be kept. `video_list` accepts
`s3://bucket/key`: before submitting, the video is checked against R21 from its header (MP4/MOV, 3 to 10 s,
720 to 2160 px, 24 to 60 fps, at most 200 MB) and sent to the API as a presigned HTTPS URL.

Input: `s3://<kling_video_bucket>/kling-inputs/source_video.mp4`.
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
    dag_id="example_kling_video_edit",
    description="Restyle a video kept in S3 with Kling (refer_type: base)",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "kling"],
):
    # [START howto_operator_kling_video_edit]
    edit = KlingSubmitVideoOperator(
        task_id="edit",
        prompt="Add a cinematic color grading effect",
        video_list=[
            {
                "video_url": f"s3://{BUCKET}/kling-inputs/source_video.mp4",
                "refer_type": "base",
                "keep_original_sound": "yes",
            }
        ],
        mode="pro",
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        pool="kling",
    )
    # [END howto_operator_kling_video_edit]

    KlingToS3Operator(
        task_id="land_in_s3",
        kling_task_id="{{ ti.xcom_pull(task_ids='edit')['kling_task_id'] }}",
        s3_bucket=BUCKET,
        s3_key="kling/video-edit/{kling_task_id}/{index}.mp4",
    ).set_upstream(edit)
