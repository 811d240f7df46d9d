"""
The submit operator's ledger: the Kling task it paid for, kept in the task instance's ``task_state_store``.

:class:`KlingTaskLedger` writes a marker before the submit request, the task id right after it, and drops
the record when the Airflow task succeeds, so a retry reattaches to the paid task instead of paying again.

**Why it is not built on Airflow's ``ResumableJobMixin``** (``airflow.sdk``, 3.3+). The mixin keeps the
same kind of record (one ``task_state_store`` key, reconnect to an active job, reuse a succeeded one,
resubmit after a failed one), but every Kling task is billed and the mixin lacks what stops paying twice:

* no marker before the request: the mixin stores the id only after ``submit_job`` returns, and its own
  docstring names the gap (a worker that dies between the request and the store's ``set``) as a known
  limitation after which the retry submits again. Here that gap is a second paid video; the ledger writes
  ``{"kling_task_id": None, ...}`` before the request, and a retry that finds it refuses to resubmit
  until a person has looked the task up. A
  :class:`~airflow_provider_kling.exceptions.KlingSubmitUncertainError` (the hook could not tell whether
  a task was created) leaves the same marker, where the mixin would keep no trace of it;
* no request check: the mixin reattaches to whatever id is stored, while a retry whose rendered request
  changed (a fixed Variable, a shifted mapped list) must not return the old request's video; the ledger
  keeps the :func:`request_digest` and reattaches only to a task made for the same request;
* no forgetting on success: the mixin never deletes its key, so clearing a finished task would hand back
  the old video instead of generating a new one; the ledger forgets the record once the task succeeds;
* no deferral: ``execute_resumable`` submits and then blocks in ``poll_until_complete`` on the worker,
  while the operator waits in the triggerer by default and records the task before it defers.

What the mixin would add (its metrics and trace span, the ``durable`` switch) does not outweigh having to
work around its flow at each of those points.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor
    from airflow.sdk.types import Logger

    from airflow_provider_kling.models import KlingVideoRequest


def request_digest(request: KlingVideoRequest) -> str:
    """
    Return the SHA-256 of a request as sent, without its ``external_task_id`` (which names the try).

    Two tries of a task instance that render the same request have the same digest; a request that
    changed between them (a fixed Variable, a shifted mapped list, a template on ``ti.try_number``) does not.
    Take it before ``s3://`` inputs are resolved (their presigned URLs change with every try).

    :param request: the validated request.
    """
    body = request.to_api_body()
    body["parameters"].pop("external_task_id", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """
    What :class:`KlingTaskLedger` remembers of a submit.

    :param kling_task_id: the task the submit created; ``None`` if it was never confirmed.
    :param external_task_id: the ``external_task_id`` it carried.
    :param request_sha256: the :func:`request_digest` of its request (``None`` in records written before
        the digest was kept: those are taken as the same request).
    """

    kling_task_id: str | None = None
    external_task_id: str | None = None
    request_sha256: str | None = None

    def is_for(self, digest: str) -> bool:
        """Whether the recorded submit was made for the request with this digest."""
        return self.request_sha256 is None or self.request_sha256 == digest


class KlingTaskLedger:
    """
    The submit operator's record of the Kling task it paid for, kept in ``context["task_state_store"]``.

    The store (Airflow 3.3+) belongs to the task instance and survives its retries (XComs do not), so a
    retry finds the task an earlier try submitted. The record is one key, :attr:`KEY`, whose value is
    ``{"kling_task_id": <id or None>, "external_task_id": <id or None>, "request_sha256": <digest>}``
    (:func:`request_digest`: the request as sent, before ``s3://`` resolution, without
    ``external_task_id``; a retry reattaches only to a task made for the same request):

    * written with ``kling_task_id: None`` just before the submit request, and with the id right after it
      returns, before anything else can fail;
    * a record without a task id means a submit was started and never confirmed (the worker died during
      it, or it raised :class:`~airflow_provider_kling.exceptions.KlingSubmitUncertainError`): a task may
      exist and be billed, so no later try submits again until a person resolves it;
    * forgotten when the Airflow task succeeds, so clearing a finished task generates a new video (a retry
      reuses; a clear regenerates).

    Where the store does not exist (Airflow < 3.3) the ledger logs one warning and remembers nothing.

    :param store: the task instance's ``task_state_store``, or ``None``.
    """

    KEY: ClassVar[str] = "kling_task"

    def __init__(self, store: TaskStateStoreAccessor | None) -> None:
        self.store = store

    @classmethod
    def open(cls, context: Context, log: Logger | Any) -> KlingTaskLedger:
        """
        Open the ledger of the running task instance.

        :param context: the task's context.
        :param log: where to warn when the store is missing.
        """
        store = context.get("task_state_store")
        if store is None:
            log.warning(
                "No task_state_store in the task context (Airflow < 3.3): a retry of this task cannot "
                "find the Kling task an earlier try submitted, and will submit (and pay for) a new one."
            )
        return cls(store)

    def recall(self) -> LedgerRecord | None:
        """Return the recorded submit, or ``None`` if there is none."""
        if self.store is None:
            return None
        value = self.store.get(self.KEY)
        if isinstance(value, str) and value:
            return LedgerRecord(kling_task_id=value)
        if isinstance(value, dict):
            kling_task_id = value.get("kling_task_id")
            external_task_id = value.get("external_task_id")
            digest = value.get("request_sha256")
            return LedgerRecord(
                kling_task_id=str(kling_task_id) if kling_task_id else None,
                external_task_id=str(external_task_id) if external_task_id else None,
                request_sha256=str(digest) if digest else None,
            )
        return None

    def begin_submit(self, external_task_id: str | None, request_sha256: str) -> None:
        """
        Record that a submit is about to be sent.

        :param external_task_id: the request's ``external_task_id``.
        :param request_sha256: the request's :func:`request_digest`.
        """
        self._write(None, external_task_id, request_sha256)

    def record(self, kling_task_id: str, external_task_id: str | None, request_sha256: str) -> None:
        """
        Record the task a submit created.

        :param kling_task_id: the API's task id.
        :param external_task_id: the request's ``external_task_id``.
        :param request_sha256: the request's :func:`request_digest`.
        """
        self._write(kling_task_id, external_task_id, request_sha256)

    def _write(self, kling_task_id: str | None, external_task_id: str | None, request_sha256: str) -> None:
        if self.store is not None:
            self.store.set(
                self.KEY,
                {
                    "kling_task_id": kling_task_id,
                    "external_task_id": external_task_id,
                    "request_sha256": request_sha256,
                },
            )

    def forget(self) -> None:
        """Drop the record: the next run of this task instance (a clear) submits a new task."""
        if self.store is not None:
            self.store.delete(self.KEY)


def unconfirmed_submit_message(context: Context, external_task_id: str | None) -> str:
    """
    Explain how to resolve a submit that an earlier try started and never confirmed.

    :param context: the task's context.
    :param external_task_id: the ``external_task_id`` the submit carried.
    """
    ti = context["ti"]
    path = (
        f"/api/v2/dags/{ti.dag_id}/dagRuns/{ti.run_id}/taskInstances/{ti.task_id}/state-store/"
        f"{KlingTaskLedger.KEY}?map_index={ti.map_index if ti.map_index is not None else -1}"
    )
    lookup = f"external_task_id {external_task_id!r}" if external_task_id else "this task's time"
    return (
        "An earlier try of this task instance started a Kling submit that was never confirmed, so a task "
        "may exist and be billed. Not submitting again. Look it up in the ModelVerse console by "
        f"{lookup}, then either record its task id to wait for it (set the state-store key "
        f'{KlingTaskLedger.KEY!r} to {{"kling_task_id": "<id>"}}) or delete that key to submit afresh '
        f"(task instance > Task State Store in the UI, or PUT/DELETE {path}), and clear this task."
    )
