"""
Reading the Kling records out of XCom for the Kling view: one query, then cards and totals in memory.

:func:`select_records` is the only query of a page: the XCom rows under
:data:`~airflow_provider_kling.records.RECORD_XCOM_KEY` of the readable DAGs in the date range, joined with
their DAG run (for its date) and task instance (for its state). Each record is first decoded into a
:class:`RecordSummary` (the few fields that filtering and totals need: an object the garbage collector does
not track, so a page over thousands of records leaves little for it to walk); the whole record is decoded
only for the cards shown. :func:`merge_task` pairs the records of one Kling task (the submit operator's and
the transfer's), :func:`build_card` makes its card, :func:`totals` adds up billed seconds per day and per
DAG. Nothing here speaks HTTP or knows a user: ``app.py`` does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

import msgspec

from airflow_provider_kling.constants import RESULT_URL_TTL_HOURS
from airflow_provider_kling.records import (
    KIND_LANDING,
    KIND_SUBMIT,
    RECORD_XCOM_KEY,
    TERMINAL_STATUSES,
    merge_records,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from sqlalchemy.orm import Session

#: The most records one page may scan (the date range bounds it first); a page says when it was cut.
MAX_SCANNED_RECORDS: Final = 20_000
#: Statuses a user can filter on: ``in_flight`` (not finished: the record cannot tell ``Pending`` from
#: ``Running`` without a status query, which the page makes per card), the two final ones, and ``landed``
#: (the videos are in S3).
STATUS_FILTERS: Final = ("in_flight", "Success", "Failure", "landed")


class RecordSummary(msgspec.Struct, gc=False):
    """
    What filtering and totals read of a record (``airflow_provider_kling.records``); other fields are skipped.

    :param kling_task_id: the Kling task.
    :param kind: ``submit`` or ``landing``.
    :param status: the task's status as recorded.
    :param usage_seconds: billed seconds.
    :param s3_uris: the landed objects.
    """

    kling_task_id: str
    kind: str = KIND_SUBMIT
    status: str | None = None
    usage_seconds: float | None = None
    s3_uris: tuple[str, ...] = ()


_SUMMARY_DECODER: Final = msgspec.json.Decoder(RecordSummary)
_JSON_DECODER: Final = msgspec.json.Decoder()


def decode_summary(value: Any) -> tuple[RecordSummary, Any] | None:
    """
    Decode an XCom value as a record's summary; return it with the value to decode the whole record from.

    Airflow stores XCom values as JSON objects, or as the JSON text of one (``XComModel.set``); a
    PostgreSQL driver may hand over the object already decoded. ``None``: not a Kling record.

    :param value: the ``xcom.value`` column as read (as text).
    """
    try:
        if isinstance(value, dict):
            return msgspec.convert(value, RecordSummary), value
        if not isinstance(value, str | bytes):
            return None
        try:
            return _SUMMARY_DECODER.decode(value), value
        except msgspec.ValidationError:  # the JSON text of the record's JSON text
            inner = _JSON_DECODER.decode(value)
            if not isinstance(inner, str):
                return None
            return _SUMMARY_DECODER.decode(inner), inner
    except msgspec.DecodeError:  # ValidationError included: not a record
        return None


@dataclass(frozen=True)
class RecordRow:
    """
    One XCom record with where it lives.

    :param dag_id: the DAG.
    :param run_id: the DAG run.
    :param task_id: the task that wrote the record.
    :param map_index: its map index.
    :param run_after: the run's date.
    :param ti_state: the task instance's state (``None`` if unknown).
    :param summary: the record's summary.
    :param encoded: the record as stored (JSON text, or an object), decoded whole on demand.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    run_after: datetime
    ti_state: str | None
    summary: RecordSummary
    encoded: Any

    @cached_property
    def record(self) -> dict[str, Any]:
        """The whole record (``airflow_provider_kling.records``)."""
        value = self.encoded if isinstance(self.encoded, dict) else _JSON_DECODER.decode(self.encoded)
        return dict(value)

    @property
    def ti_key(self) -> dict[str, Any]:
        """The task instance's identity, as the app's query parameters name it."""
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
        }


@dataclass(slots=True)
class Selection:
    """
    What a page asks for.

    :param dag_ids: the DAGs to read (already cut to those the user may read).
    :param since: the first date of the range (inclusive, UTC).
    :param until: the end of the range (exclusive, UTC).
    :param run_id: only this run (the task instance tab).
    """

    dag_ids: Collection[str]
    since: datetime | None = None
    until: datetime | None = None
    run_id: str | None = None


def select_records(session: Session, selection: Selection) -> tuple[list[RecordRow], bool]:
    """
    Run the one query of a page; return its records, newest run first, and whether the scan was cut.

    :param session: a metadata database session.
    :param selection: which DAGs, dates and run.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import Text, and_, select, type_coerce

    if not selection.dag_ids:
        return [], False
    stmt = (
        select(
            XComModel.dag_id,
            XComModel.run_id,
            XComModel.task_id,
            XComModel.map_index,
            type_coerce(XComModel.value, Text),  # decoded once, here (a JSON column decodes it twice)
            DagRun.run_after,
            TaskInstance.state,
        )
        .join(DagRun, DagRun.id == XComModel.dag_run_id)
        .outerjoin(
            TaskInstance,
            and_(
                TaskInstance.dag_id == XComModel.dag_id,
                TaskInstance.run_id == XComModel.run_id,
                TaskInstance.task_id == XComModel.task_id,
                TaskInstance.map_index == XComModel.map_index,
            ),
        )
        .where(XComModel.key == RECORD_XCOM_KEY, XComModel.dag_id.in_(sorted(selection.dag_ids)))
    )
    if selection.since is not None:
        stmt = stmt.where(DagRun.run_after >= selection.since)
    if selection.until is not None:
        stmt = stmt.where(DagRun.run_after < selection.until)
    if selection.run_id is not None:
        stmt = stmt.where(XComModel.run_id == selection.run_id)
    stmt = stmt.order_by(DagRun.run_after.desc(), XComModel.dag_id, XComModel.task_id, XComModel.map_index)
    rows = session.execute(stmt.limit(MAX_SCANNED_RECORDS + 1)).all()
    records = []
    for dag_id, run_id, task_id, map_index, value, run_after, state in rows[:MAX_SCANNED_RECORDS]:
        decoded = decode_summary(value)
        if decoded is not None:
            summary, encoded = decoded
            state_name = str(state) if state else None
            records.append(
                RecordRow(dag_id, run_id, task_id, map_index, run_after, state_name, summary, encoded)
            )
    return records, len(rows) > MAX_SCANNED_RECORDS


@dataclass(slots=True)
class _Task:
    """The records of one Kling task, as found."""

    submitted: RecordRow | None = None
    landed: RecordRow | None = None
    order: int = 0


def group_by_task(rows: Iterable[RecordRow]) -> list[_Task]:
    """Group the records by Kling task (within a run), keeping the order of their first record."""
    tasks: dict[tuple[str, str, str], _Task] = {}
    for order, row in enumerate(rows):
        key = (row.dag_id, row.run_id, row.summary.kling_task_id)
        task = tasks.setdefault(key, _Task(order=order))
        if row.summary.kind == KIND_LANDING:
            task.landed = task.landed or row
        else:
            task.submitted = task.submitted or row
    return sorted(tasks.values(), key=lambda task: task.order)


def ui_links(row: RecordRow) -> dict[str, str]:
    """The Airflow UI pages of a record's DAG run and task instance (paths from the server's root)."""
    run = f"/dags/{quote(row.dag_id, safe='')}/runs/{quote(row.run_id, safe='')}"
    task = f"{run}/tasks/{quote(row.task_id, safe='')}"
    if row.map_index >= 0:
        task += f"/mapped/{row.map_index}"
    return {"dag_run": run, "task_instance": task}


def _video_sources(card: dict[str, Any], owner: RecordRow, now: float) -> list[dict[str, Any]]:
    """Where each video of a card plays: the landed object, else the result URL while valid, else nowhere."""
    landed = list(card.get("s3_uris") or [])
    urls = list(card.get("urls") or [])
    finished_at = card.get("finished_at")
    url_valid = not isinstance(finished_at, int | float) or now < finished_at + RESULT_URL_TTL_HOURS * 3600
    sources = []
    for index in range(max(len(landed), len(urls))):
        if index < len(landed):
            state = "landed"
        elif url_valid:
            state = "result_url"
        else:
            state = "expired"
        source: dict[str, Any] = {"index": index, "state": state, "src": None}
        if state != "expired":
            source["src"] = "video?" + urlencode({**owner.ti_key, "index": index})
        sources.append(source)
    return sources


@dataclass(frozen=True, slots=True)
class MergedTask:
    """
    One Kling task's records, paired: enough to filter and total it (from the summaries only).

    :func:`build_card` merges the whole records of the tasks a page shows.

    :param submitted: the submit operator's record, if any.
    :param landed: the transfer's record, if any.
    """

    submitted: RecordRow | None
    landed: RecordRow | None

    @property
    def main(self) -> RecordRow:
        """The record the card is about: the submit's, else the landing's."""
        row = self.submitted or self.landed
        assert row is not None
        return row

    @property
    def _outcome(self) -> RecordSummary:
        """The summary holding the outcome: the submit's once final, else the landing's (as merged)."""
        submitted, landed = self.submitted, self.landed
        if landed is None or (submitted is not None and submitted.summary.status in TERMINAL_STATUSES):
            return self.main.summary
        return landed.summary

    @property
    def status(self) -> str | None:
        """The task's status, as its records know it."""
        return self._outcome.status

    @property
    def usage_seconds(self) -> float | None:
        """Its billed seconds."""
        return self._outcome.usage_seconds

    @property
    def in_flight(self) -> bool:
        """Whether the Kling task has not finished, as far as its records know."""
        return self.status not in TERMINAL_STATUSES

    @property
    def is_landed(self) -> bool:
        """Whether its videos are in S3."""
        return self.landed is not None and bool(self.landed.summary.s3_uris)


def merge_task(task: _Task) -> MergedTask:
    """Pair the records of one Kling task."""
    return MergedTask(task.submitted, task.landed)


def build_card(item: MergedTask, now: float) -> dict[str, Any]:
    """
    Turn one Kling task into what the page shows of it (no secret, no object URI, no presigned URL).

    :param item: its merged records.
    :param now: Unix time.
    """
    main, landed = item.main, item.landed
    merged = merge_records(
        item.submitted.record if item.submitted else None, landed.record if landed is not None else None
    )
    video_owner = landed if landed is not None and item.is_landed else main
    links = ui_links(main)
    if landed is not None:
        links["landing_task_instance"] = ui_links(landed)["task_instance"]
    return {
        "kling_task_id": merged.get("kling_task_id"),
        "external_task_id": merged.get("external_task_id"),
        "dag_id": main.dag_id,
        "run_id": main.run_id,
        "task_id": main.task_id,
        "map_index": main.map_index,
        "run_after": main.run_after.isoformat(),
        "ti_state": main.ti_state,
        "request": merged.get("request") or {},
        "status": merged.get("status"),
        "status_since": merged.get("status_since"),
        "in_flight": item.in_flight,
        "submitted_at": merged.get("submitted_at"),
        "finished_at": merged.get("finished_at"),
        "usage_seconds": merged.get("usage_seconds"),
        "error": merged.get("error"),
        "landed": item.is_landed,
        "videos": _video_sources(merged, video_owner, now),
        "live": "api/live?" + urlencode(main.ti_key) if item.submitted else None,
        "links": links,
    }


def matches_status(item: MergedTask, status: str | None) -> bool:
    """Whether a task passes the status filter (:data:`STATUS_FILTERS`)."""
    if not status:
        return True
    if status == "landed":
        return item.is_landed
    if status == "in_flight":
        return item.in_flight
    return str(item.status or "").lower() == status.lower()


def totals(items: Sequence[MergedTask]) -> dict[str, Any]:
    """Billed seconds (and videos) per day (of the run, UTC) and per DAG, and in all."""
    per_day: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    per_dag: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for item in items:
        seconds = item.usage_seconds
        billed = float(seconds) if seconds is not None else 0.0
        main = item.main
        for bucket in (per_day[main.run_after.date().isoformat()], per_dag[main.dag_id]):
            bucket[0] += billed
            bucket[1] += 1
    return {
        "billed_seconds": sum(bucket[0] for bucket in per_dag.values()),
        "per_day": [
            {"day": day, "billed_seconds": s, "tasks": int(n)} for day, (s, n) in sorted(per_day.items())
        ],
        "per_dag": [
            {"dag_id": dag_id, "billed_seconds": s, "tasks": int(n)}
            for dag_id, (s, n) in sorted(per_dag.items())
        ],
    }


def utc_day(value: str | None) -> datetime | None:
    """Parse ``YYYY-MM-DD`` as midnight UTC (``None`` when empty); ``ValueError`` when malformed."""
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
