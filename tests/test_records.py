"""The Kling record kept in XCom for the Kling view: what it holds, how it is updated, merged and written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_kling.records import (
    RECORD_XCOM_KEY,
    keep_submitted,
    landing_record,
    merge_records,
    record_finished_task,
    request_summary,
    submit_record,
    with_outcome,
)

INLINE_IMAGE = "iVBORw0KGgo" + "A" * 400  # bare base64 image data, as a user may pass it


@dataclass
class XComTaskInstance:
    """A task instance's XCom push and pull over a dict, as the task SDK offers them."""

    task_id: str = "generate"
    map_index: int = -1
    xcoms: dict[str, Any] = field(default_factory=dict)
    fail_pushes: bool = False

    def xcom_push(self, key: str, value: Any) -> None:
        if self.fail_pushes:
            raise RuntimeError("execution API unavailable")
        self.xcoms[key] = json.loads(json.dumps(value))

    def xcom_pull(self, *, task_ids: str, key: str, map_indexes: int) -> Any:
        assert (task_ids, map_indexes) == (self.task_id, self.map_index)
        return self.xcoms.get(key)


def test_summary_keeps_prompts_and_counts_but_no_input_data() -> None:
    body = {
        "model": "kling-v3-omni",
        "input": {"prompt": "<<<image_1>>> walks on the beach"},
        "parameters": {
            "aspect_ratio": "9:16",
            "duration": 5,
            "image_list": [{"image_url": INLINE_IMAGE, "type": "first_frame"}],
            "external_task_id": "ext-1",
        },
    }
    summary = request_summary(body)
    assert summary["prompt"] == "<<<image_1>>> walks on the beach"
    assert (summary["aspect_ratio"], summary["duration"], summary["images"], summary["videos"]) == (
        "9:16",
        5,
        1,
        0,
    )
    assert summary["model"] == "kling-v3-omni"
    record = submit_record(body=body, kling_task_id="t-1", kling_conn_id="kling_default", now=100.0)
    assert record["external_task_id"] == "ext-1"
    text = json.dumps(record)
    assert INLINE_IMAGE[:40] not in text
    assert "password" not in text


def test_outcome_moves_the_status_clock_only_when_the_status_changes() -> None:
    record = submit_record(body={}, kling_task_id="t-1", kling_conn_id="c", now=100.0)
    running = with_outcome(record, status="Running", now=160.0)
    assert (running["status"], running["status_since"]) == ("Running", 160.0)
    assert with_outcome(running, status="Running", now=200.0)["status_since"] == 160.0
    done = with_outcome(
        running, status="Success", urls=["https://r/0.mp4"], usage_seconds=5, finish_time=250.0
    )
    assert (done["status_since"], done["finished_at"], done["usage_seconds"]) == (250.0, 250.0, 5)


def test_merge_takes_the_outcome_and_objects_from_the_landing() -> None:
    submitted = submit_record(
        body={"input": {"prompt": "p"}}, kling_task_id="t-1", kling_conn_id="c", now=1.0
    )
    landed = landing_record(
        result={"kling_task_id": "t-1", "status": "Success", "urls": ["https://r/0.mp4"], "usage_seconds": 5},
        s3_uris=["s3://b/k.mp4"],
        kling_conn_id="c",
        aws_conn_id="aws_x",
        now=10.0,
    )
    merged = merge_records(submitted, landed)
    assert (merged["status"], merged["usage_seconds"], merged["s3_uris"]) == ("Success", 5, ["s3://b/k.mp4"])
    assert (merged["request"]["prompt"], merged["aws_conn_id"]) == ("p", "aws_x")
    assert merge_records(None, landed)["s3_uris"] == ["s3://b/k.mp4"]
    with pytest.raises(ValueError, match="at least one"):
        merge_records(None, None)


def test_written_at_submit_and_updated_at_finish() -> None:
    ti = XComTaskInstance()
    context = {"ti": ti}
    keep_submitted(context, body={"input": {"prompt": "p"}}, kling_task_id="t-1", kling_conn_id="kling_x")
    assert ti.xcoms[RECORD_XCOM_KEY]["status"] == "Pending"
    event = {"status": "success", "kling_task_id": "t-1", "urls": ["https://r/0.mp4"], "usage_seconds": 5}
    record_finished_task(context, event, kling_conn_id="kling_x")
    record = ti.xcoms[RECORD_XCOM_KEY]
    assert (record["status"], record["urls"], record["request"]["prompt"]) == (
        "Success",
        ["https://r/0.mp4"],
        "p",
    )
    timeout = {
        "status": "error",
        "kling_task_id": "t-1",
        "reason": "timeout",
        "message": "m",
        "last_status": "Running",
    }
    record_finished_task(context, timeout, kling_conn_id="kling_x")
    assert ti.xcoms[RECORD_XCOM_KEY]["status"] == "Running"  # the wait ended, the Kling task did not
    failure = {"status": "failure", "kling_task_id": "t-1", "message": "moderation"}
    record_finished_task(context, failure, kling_conn_id="kling_x")
    assert (ti.xcoms[RECORD_XCOM_KEY]["status"], ti.xcoms[RECORD_XCOM_KEY]["error"]) == (
        "Failure",
        "moderation",
    )


def test_a_failed_write_never_fails_the_task(caplog: pytest.LogCaptureFixture) -> None:
    ti = XComTaskInstance(fail_pushes=True)
    keep_submitted({"ti": ti}, body={}, kling_task_id="t-1", kling_conn_id="c")
    assert "Could not keep the Kling record" in caplog.text
    keep_submitted({}, body={}, kling_task_id="t-1", kling_conn_id="c")  # no task instance: nothing to do
