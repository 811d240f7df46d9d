"""
Test-only DAG of the scale test (``tests/scale/test_forty_videos.py``), for the distributed topology: a
PostgreSQL metadata database, the CeleryExecutor with two workers and two triggerers.

``generate`` maps :class:`KlingSubmitVideoOperator` over 40 prompts (submit, then wait in a triggerer) in
the pool ``kling`` (5 slots, deferred tasks included); ``land`` copies each finished task's video into S3
(``params.s3_bucket``, under ``params.s3_prefix``). The connections ``kling_scale`` and ``aws_scale`` are the
test's simulator (admitting 5 tasks at once) and S3 server.

One fault is acted out by the DAG itself, because only the task knows the moment: the first try of the map
index ``params.pause_map_index``, right after the task id of its submit is recorded in the task state store,
writes ``<params.marker_dir>/paused-<map index>`` (its pid) and sleeps (at most :data:`PAUSE_SECONDS`), so
that the test can ``SIGKILL`` the whole Celery worker running it "right after a submit". Killing the whole
worker kills its other slot too, so the test first holds every try's submit back (it writes
``<params.marker_dir>/hold-submits``; :class:`HoldSubmits` waits before the "a submit begins" record is
written) until no submit is in flight: a try killed inside its submit is, by design, never resubmitted
(its task may exist), which would cost the run a video.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

DAG_ID: Final = "kling_scale"
#: How many videos the run makes, one per prompt.
VIDEOS: Final = 40
PROMPTS: Final = [
    f"scale test: video {index:02d} of {VIDEOS}, a lantern on a lake" for index in range(VIDEOS)
]
POOL: Final = "kling"
KLING_CONN_ID: Final = "kling_scale"
AWS_CONN_ID: Final = "aws_scale"
ASPECT_RATIO: Final = "16:9"
#: Seconds between two status queries of each wait.
POLL_SECONDS: Final = 0.5
#: The longest a paused try sleeps, waiting for the test to kill its worker.
PAUSE_SECONDS: Final = 180.0
#: Tries of each task: faults (a killed worker, a lost broker message) cost a try each.
RETRIES: Final = 3


class StoreWithAMarker:
    """
    A ``task_state_store`` that acts on a marker file when the ledger writes; everything else is the store's.

    :param store: the task instance's real store.
    :param marker: the marker file.
    :param log: the task's logger.
    """

    def __init__(self, store: Any, marker: Path, log: Any) -> None:
        self.store = store
        self.marker = marker
        self.log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class PauseAfterRecord(StoreWithAMarker):
    """Once a submitted task id is written, writes the marker (the task process's pid) and sleeps."""

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        self.store.set(key, value, **kwargs)
        if isinstance(value, dict) and value.get("kling_task_id"):
            self.log.warning(
                "Scale test: Kling task %s is recorded; pausing for the test to SIGKILL this worker",
                value["kling_task_id"],
            )
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(str(os.getpid()))
            time.sleep(PAUSE_SECONDS)
            self.log.error("Scale test: nobody killed this worker within %s s", PAUSE_SECONDS)


class HoldSubmits(StoreWithAMarker):
    """While the marker exists, waits (at most :data:`PAUSE_SECONDS`) before recording a submit begins."""

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        if isinstance(value, dict) and not value.get("kling_task_id") and self.marker.exists():
            self.log.warning("Scale test: submits are held while the test kills a worker")
            deadline = time.monotonic() + PAUSE_SECONDS
            while self.marker.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.store.set(key, value, **kwargs)


class ScaleKlingSubmit(KlingSubmitVideoOperator):
    """The submit operator; try 1 of ``params.pause_map_index`` pauses once its submit is recorded."""

    def execute(self, context: Any) -> Any:
        ti, params = context["ti"], context["params"]
        marker_dir = Path(params["marker_dir"])
        store: Any = HoldSubmits(context["task_state_store"], marker_dir / "hold-submits", self.log)
        if ti.map_index == params["pause_map_index"] and ti.try_number == 1:
            store = PauseAfterRecord(store, marker_dir / f"paused-{ti.map_index}", self.log)
        context["task_state_store"] = store
        return super().execute(context)


def kling_task_id_of(result: dict[str, Any]) -> str:
    """Pick the Kling task id out of a finished-task dict."""
    return str(result["kling_task_id"])


#: A retry waits longer than the test's broker outage (10 s), as docs/deployment.md advises: with 1 s, a try
#: whose workload could not be sent was retried into the same outage, and a CI run saw three map indexes
#: spend all four tries there.
RETRY = {"retries": RETRIES, "retry_delay": timedelta(seconds=15)}

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    params={
        "s3_bucket": "kling-tests",
        "s3_prefix": "scale/",
        "pause_map_index": -2,
        "marker_dir": "/nonexistent",
    },
    tags=["kling", "test"],
) as dag:
    generate = ScaleKlingSubmit.partial(
        task_id="generate",
        kling_conn_id=KLING_CONN_ID,
        aspect_ratio=ASPECT_RATIO,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=900,
        pool=POOL,
        **RETRY,
    ).expand(prompt=PROMPTS)

    KlingToS3Operator.partial(
        task_id="land",
        kling_conn_id=KLING_CONN_ID,
        aws_conn_id=AWS_CONN_ID,
        s3_bucket="{{ params.s3_bucket }}",
        s3_key="{{ params.s3_prefix }}{kling_task_id}/{index}.mp4",
        **RETRY,
    ).expand(kling_task_id=generate.output.map(kling_task_id_of))
