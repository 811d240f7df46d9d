"""
The Kling record: what the Kling view of the Airflow UI shows of one Kling task, kept in XCom.

The operators write it (no new database table): :class:`KlingSubmitVideoOperator` under the XCom key
:data:`RECORD_XCOM_KEY` of its task instance when it submits (or reattaches to) a task, and again when the
task finishes; :class:`KlingToS3Operator` under the same key of its own task instance when the videos have
landed. The plugin (``airflow_provider_kling.plugins``) reads these XComs and merges the records of one
Kling task (:func:`merge_records`).

A record is a JSON object (:data:`RECORD_VERSION` 1)::

    {"version": 1, "kind": "submit" | "landing", "kling_task_id", "external_task_id", "kling_conn_id",
     "aws_conn_id", "request": {request summary}, "status", "status_since", "submitted_at", "finished_at",
     "usage_seconds", "urls", "s3_uris", "error", "updated_at"}

Times are Unix seconds. The request summary (:func:`request_summary`) holds the prompts, the parameters
and the *number* of image and video inputs: never an input's URL or base64 data, and never a key (the
record holds connection ids only).

This module imports nothing heavy: the operators import it inside their methods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

#: The XCom key of the record, on the task instance that wrote it.
RECORD_XCOM_KEY: Final = "kling_record"
RECORD_VERSION: Final = 1
#: A record written by the submit operator (request summary, status) or by the transfer (landed URIs).
KIND_SUBMIT: Final = "submit"
KIND_LANDING: Final = "landing"
#: Longest prompt kept in a record (the API's own limit is lower; this only bounds a hostile value).
MAX_RECORDED_TEXT: Final = 5000
#: Statuses after which a Kling task never changes.
TERMINAL_STATUSES: Final = frozenset({"Success", "Failure"})
#: The parameters a summary keeps, as the API names them.
_SUMMARY_PARAMETERS: Final = ("mode", "aspect_ratio", "duration", "sound", "multi_shot", "shot_type")


def _text(value: object) -> str | None:
    if value is None:
        return None
    return str(value)[:MAX_RECORDED_TEXT]


def request_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """
    Summarize a request body for the record: prompts, parameters and input counts; no input data.

    :param body: the request as sent (``KlingVideoRequest.to_api_body()``).
    """
    given_input = body.get("input")
    given_parameters = body.get("parameters")
    prompts: Mapping[str, Any] = given_input if isinstance(given_input, Mapping) else {}
    parameters: Mapping[str, Any] = given_parameters if isinstance(given_parameters, Mapping) else {}
    shots = parameters.get("multi_prompt") or []
    summary: dict[str, Any] = {
        "model": _text(body.get("model")),
        "prompt": _text(prompts.get("prompt")),
        "negative_prompt": _text(prompts.get("negative_prompt")),
        "shots": [
            {
                "index": shot.get("index"),
                "prompt": _text(shot.get("prompt")),
                "duration": shot.get("duration"),
            }
            for shot in shots
            if isinstance(shot, Mapping)
        ],
        "images": len(parameters.get("image_list") or []),
        "videos": len(parameters.get("video_list") or []),
    }
    for name in _SUMMARY_PARAMETERS:
        summary[name] = parameters.get(name)
    return summary


def submit_record(
    *,
    body: Mapping[str, Any],
    kling_task_id: str,
    kling_conn_id: str,
    status: str = "Pending",
    now: float | None = None,
) -> dict[str, Any]:
    """
    Return the record of a task just submitted (or reattached to) by the submit operator.

    :param body: the request as sent (before ``s3://`` inputs are resolved is fine: only counts are kept).
    :param kling_task_id: the API's task id.
    :param kling_conn_id: the connection the task was submitted with (the plugin queries its status).
    :param status: the task's status as last seen (``Pending`` right after a submit).
    :param now: Unix time (default: now).
    """
    current = time.time() if now is None else now
    parameters = body.get("parameters")
    external_task_id = parameters.get("external_task_id") if isinstance(parameters, Mapping) else None
    return {
        "version": RECORD_VERSION,
        "kind": KIND_SUBMIT,
        "kling_task_id": kling_task_id,
        "external_task_id": external_task_id,
        "kling_conn_id": kling_conn_id,
        "aws_conn_id": None,
        "request": request_summary(body),
        "status": status,
        "status_since": current,
        "submitted_at": current,
        "finished_at": None,
        "usage_seconds": None,
        "urls": [],
        "s3_uris": [],
        "error": None,
        "updated_at": current,
    }


def with_outcome(
    record: Mapping[str, Any],
    *,
    status: str,
    urls: list[str] | None = None,
    usage_seconds: float | None = None,
    submit_time: float | None = None,
    finish_time: float | None = None,
    error: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """
    Return ``record`` updated with what a status query or a trigger event told of the task.

    :param record: the record so far.
    :param status: the task's status.
    :param urls: the result URLs (on ``Success``).
    :param usage_seconds: the billed seconds.
    :param submit_time: the API's submit time (Unix seconds), kept when the record has none.
    :param finish_time: the API's finish time (Unix seconds).
    :param error: the vendor's or the wait's error message (on a failure).
    :param now: Unix time (default: now).
    """
    current = time.time() if now is None else now
    updated = dict(record)
    if updated.get("status") != status:
        updated["status_since"] = finish_time if finish_time and status in TERMINAL_STATUSES else current
    updated["status"] = status
    if urls:
        updated["urls"] = list(urls)
    if usage_seconds is not None:
        updated["usage_seconds"] = usage_seconds
    if submit_time and not updated.get("submitted_at"):
        updated["submitted_at"] = submit_time
    if status in TERMINAL_STATUSES:
        updated["finished_at"] = finish_time or current
    updated["error"] = _text(error)
    updated["updated_at"] = current
    return updated


def landing_record(
    *,
    result: Mapping[str, Any],
    s3_uris: list[str],
    kling_conn_id: str,
    aws_conn_id: str | None,
    now: float | None = None,
) -> dict[str, Any]:
    """
    Return the record the transfer writes once a task's videos have landed in S3.

    :param result: the task's finished-task dict (``KlingTask.as_result()``).
    :param s3_uris: the landed objects, in the order of ``result["urls"]``.
    :param kling_conn_id: the Kling connection the transfer read the task with.
    :param aws_conn_id: the AWS connection of the bucket (the plugin presigns the objects with it).
    :param now: Unix time (default: now).
    """
    current = time.time() if now is None else now
    base = {
        "version": RECORD_VERSION,
        "kind": KIND_LANDING,
        "kling_task_id": str(result["kling_task_id"]),
        "external_task_id": None,
        "kling_conn_id": kling_conn_id,
        "aws_conn_id": aws_conn_id,
        "request": None,
        "status": None,
        "status_since": current,
        "submitted_at": result.get("submit_time"),
        "finished_at": None,
        "usage_seconds": None,
        "urls": [],
        "s3_uris": list(s3_uris),
        "error": None,
        "updated_at": current,
    }
    return with_outcome(
        base,
        status=str(result.get("status") or "Success"),
        urls=list(result.get("urls") or []),
        usage_seconds=result.get("usage_seconds"),
        finish_time=result.get("finish_time"),
        now=current,
    )


def merge_records(submitted: Mapping[str, Any] | None, landed: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    Merge the submit operator's and the transfer's records of one Kling task into what a card shows.

    The submit record gives the request summary and the connection; the landing record the landed
    objects, and the outcome when the submit operator did not wait for it (a sensor did).

    :param submitted: the submit operator's record, if any.
    :param landed: the transfer's record, if any.
    """
    if submitted is None and landed is None:
        raise ValueError("merge_records needs at least one record")
    merged = dict(submitted or landed or {})
    if submitted is not None and landed is not None:
        if submitted.get("status") not in TERMINAL_STATUSES:
            for name in ("status", "status_since", "finished_at", "usage_seconds", "urls", "error"):
                merged[name] = landed.get(name)
        merged["s3_uris"] = list(landed.get("s3_uris") or [])
        merged["aws_conn_id"] = landed.get("aws_conn_id")
    return merged


def _task_instance(context: Context | Mapping[str, Any]) -> Any:
    return context.get("ti") if isinstance(context, Mapping) else None


def push_record(context: Context | Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """
    Write ``record`` to the running task instance's XCom under :data:`RECORD_XCOM_KEY`.

    The record only feeds the UI: a failed write is logged as a warning and never fails a task that
    may already have paid for a video.

    :param context: the task's context.
    :param record: the record.
    """
    ti = _task_instance(context)
    xcom_push = getattr(ti, "xcom_push", None)
    if xcom_push is None:
        log.debug("No task instance with XCom in the context: the Kling record is not kept")
        return
    try:
        xcom_push(key=RECORD_XCOM_KEY, value=dict(record))
    except Exception as error:
        log.warning("Could not keep the Kling record in XCom (the UI will not show it): %s", error)


def pull_record(context: Context | Mapping[str, Any]) -> dict[str, Any] | None:
    """
    Return the record the running task instance wrote earlier in this try, or ``None``.

    :param context: the task's context.
    """
    ti = _task_instance(context)
    xcom_pull = getattr(ti, "xcom_pull", None)
    if xcom_pull is None:
        return None
    try:
        value = xcom_pull(task_ids=ti.task_id, key=RECORD_XCOM_KEY, map_indexes=ti.map_index)
    except Exception as error:
        log.warning("Could not read the Kling record from XCom: %s", error)
        return None
    return dict(value) if isinstance(value, Mapping) and value.get("kling_task_id") else None


def record_outcome(
    context: Context | Mapping[str, Any], *, kling_task_id: str | None, kling_conn_id: str, **outcome: Any
) -> None:
    """
    Update the running task instance's record with a task's outcome (see :func:`with_outcome`).

    :param context: the task's context.
    :param kling_task_id: the Kling task (a record is started if this try has none yet).
    :param kling_conn_id: the Kling connection.
    :param outcome: the keyword arguments of :func:`with_outcome`.
    """
    record = pull_record(context)
    if record is None or record.get("kling_task_id") != kling_task_id:
        if not kling_task_id:
            return
        record = submit_record(body={}, kling_task_id=kling_task_id, kling_conn_id=kling_conn_id)
    push_record(context, with_outcome(record, **outcome))


def record_finished_task(
    context: Context | Mapping[str, Any], result: Mapping[str, Any], *, kling_conn_id: str
) -> None:
    """
    Update the record with a finished-task dict (``KlingTask.as_result()`` and the trigger's events).

    :param context: the task's context.
    :param result: a finished-task dict, or a trigger event (``status`` ``failure``/``error`` + ``message``).
    :param kling_conn_id: the Kling connection.
    """
    record_outcome(
        context,
        kling_task_id=result.get("kling_task_id"),
        kling_conn_id=kling_conn_id,
        **_outcome_of(result),
    )


def _outcome_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """The :func:`with_outcome` arguments of a finished-task dict or a trigger event."""
    status = str(result.get("status") or "")
    event_statuses = {"success": "Success", "failure": "Failure"}
    if status in event_statuses:
        status = event_statuses[status]
    elif status == "error":  # the wait ended (timeout, API error): the task itself did not finish
        status = str(result.get("last_status") or "Unknown")
    return {
        "status": status,
        "urls": list(result.get("urls") or []),
        "usage_seconds": result.get("usage_seconds"),
        "submit_time": result.get("submit_time"),
        "finish_time": result.get("finish_time"),
        "error": result.get("message") or result.get("error_message"),
    }


def keep_submitted(
    context: Context | Mapping[str, Any],
    *,
    body: Mapping[str, Any],
    kling_task_id: str,
    kling_conn_id: str,
    status: str = "Pending",
    result: Mapping[str, Any] | None = None,
) -> None:
    """
    Write the submit operator's record of the task it submitted or reattached to (one XCom write).

    :param context: the task's context.
    :param body: the request as sent.
    :param kling_task_id: the API's task id.
    :param kling_conn_id: the Kling connection.
    :param status: the task's status as last seen.
    :param result: the finished-task dict when the task has already finished (a reattach to a success).
    """
    record = submit_record(body=body, kling_task_id=kling_task_id, kling_conn_id=kling_conn_id, status=status)
    if result is not None:
        record = with_outcome(record, **_outcome_of(result))
    push_record(context, record)


__all__ = [
    "KIND_LANDING",
    "KIND_SUBMIT",
    "RECORD_VERSION",
    "RECORD_XCOM_KEY",
    "TERMINAL_STATUSES",
    "keep_submitted",
    "landing_record",
    "merge_records",
    "pull_record",
    "push_record",
    "record_finished_task",
    "record_outcome",
    "request_summary",
    "submit_record",
    "with_outcome",
]
