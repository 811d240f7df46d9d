"""
The submit operator: generate a video with Kling V3 Omni from a DAG, without ever paying twice.

:class:`KlingSubmitVideoOperator` validates the request (rules R1..R22 of the API) before any HTTP call,
submits one task, and either returns its id or waits for it (in the triggerer by default) and returns
the finished-task dict. Every submitted task is billed, so the operator records the task's id in the
task instance's ``task_state_store`` right after the submit: a later try of the same task instance
reattaches to that task instead of paying for a new one (see
:class:`~airflow_provider_kling.operators._ledger.KlingTaskLedger`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Final

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator
from pydantic import BaseModel, ValidationError

from airflow_provider_kling.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
)
from airflow_provider_kling.exceptions import (
    KlingBadRequestError,
    KlingError,
    KlingSubmitUncertainError,
    KlingTaskCreationError,
    KlingTaskFailedError,
)
from airflow_provider_kling.links.kling import KlingTaskStatusLink, KlingVideoLink
from airflow_provider_kling.operators._ledger import (
    KlingTaskLedger,
    request_digest,
    unconfirmed_submit_message,
)
from airflow_provider_kling.waiting import (
    check_poll_interval,
    check_wait_timeout,
    log_finished_task,
    no_result_error,
    wait_budget,
)

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingTask, KlingVideoRequest

# The hook, the models and the trigger are imported where they are used, not here: every DAG file that
# uses this operator imports this module at every parse, and they are most of the provider's import cost
# (benchmarks/bench_imports.py). A DAG whose request is static still builds the models when it validates
# that request at parse time, which is the point of validating it there.

#: The request fields an operator takes as keyword arguments (the names of ``KlingVideoRequest.build``).
REQUEST_FIELDS: Final = (
    "prompt",
    "negative_prompt",
    "mode",
    "aspect_ratio",
    "duration",
    "sound",
    "multi_shot",
    "shot_type",
    "multi_prompt",
    "image_list",
    "video_list",
    "watermark_enabled",
    "external_task_id",
)

#: Characters a derived ``external_task_id`` may not hold.
_EXTERNAL_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_HASH_CHARS = 16
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_RULE_ID = re.compile(r"^(R\d+|spec)\b")


def default_external_task_id(
    *, dag_id: str, run_id: str, task_id: str, map_index: int | None, try_number: int
) -> str:
    """
    Derive the ``external_task_id`` that traces a paid Kling task back to its Airflow task instance try.

    The id holds only ``[A-Za-z0-9_-]`` and at most 64 characters: ``<dag>-<run>-<task>[-m<map>]-t<try>``
    when that fits; otherwise ``<dag>-<task>`` (cut to fit), the map index, the try, and a 64-bit hash of
    every part (the run id included), so two task instance tries never share an id.

    :param dag_id: the DAG id.
    :param run_id: the DAG run id.
    :param task_id: the task id.
    :param map_index: the map index (``-1`` or ``None`` for an unmapped task).
    :param try_number: the try number.
    """
    from airflow_provider_kling.models import MAX_EXTERNAL_TASK_ID_LENGTH

    mapped = f"-m{map_index}" if map_index is not None and map_index >= 0 else ""
    readable = _EXTERNAL_ID_UNSAFE.sub("_", f"{dag_id}-{run_id}-{task_id}{mapped}-t{try_number}")
    if len(readable) <= MAX_EXTERNAL_TASK_ID_LENGTH:
        return readable
    parts = "\x00".join((dag_id, run_id, task_id, str(map_index), str(try_number)))
    digest = hashlib.sha256(parts.encode()).hexdigest()[:_HASH_CHARS]
    tail = f"{mapped}-t{try_number}-{digest}"
    head = _EXTERNAL_ID_UNSAFE.sub("_", f"{dag_id}-{task_id}")[: MAX_EXTERNAL_TASK_ID_LENGTH - len(tail)]
    return head + tail


def describe_validation_error(error: ValidationError) -> str:
    """
    Render a request's validation error as one line per problem, each starting with its rule ID.

    :param error: what ``KlingVideoRequest`` raised.
    """
    lines = []
    for item in error.errors():
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        if not _RULE_ID.match(message):
            location = ".".join(str(part) for part in item.get("loc", ()))
            message = f"{location}: {message}" if location else message
        lines.append(message)
    return "; ".join(lines) or str(error)


def is_static(value: Any) -> bool:
    """
    Whether a DAG-file value is final as written: plain JSON-like data with no Jinja in it.

    Static values are validated when the DAG is parsed; templates, XCom references and other lazy
    values only after rendering.

    :param value: an operator argument.
    """
    if value is None or isinstance(value, bool | int | float):
        return True
    if isinstance(value, str):
        return not any(marker in value for marker in _TEMPLATE_MARKERS)
    if isinstance(value, Mapping):
        return all(isinstance(key, str) and is_static(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(is_static(item) for item in value)
    return False


class KlingSubmitVideoOperator(BaseOperator):
    """
    Submit a Kling V3 Omni video task; optionally wait for it (in the triggerer by default).

    The request is given either as keyword arguments (``prompt``, ``aspect_ratio``, ...) or whole, as
    ``request`` (a body dict or a :class:`KlingVideoRequest`). It is validated against rules R1..R22
    before any HTTP call: when the DAG file is parsed if every value is static, and always again after
    templates are rendered (an invalid request then fails the task without retries, and costs nothing).
    ``s3://`` inputs are turned into URLs the API can fetch just before the submit.

    Without waiting the operator returns the Kling task id (XCom ``return_value``) for a
    :class:`KlingTaskSensor`. With ``wait_for_completion=True`` it returns the finished-task dict
    ``{"kling_task_id", "status", "urls", "usage_seconds", "submit_time", "finish_time"}`` and raises
    :class:`KlingTaskFailedError` with the vendor's message if the task fails, and
    :class:`KlingTaskNotReadyError` if it reports ``Success`` without a result URL (the record is kept: a
    retry reattaches to the paid task and queries it again). Waiting defers to
    :class:`KlingTaskTrigger` by default (``deferrable=True``): a video takes minutes, and polling it from
    a worker slot would hold that slot idle the whole time.

    **Never paying twice.** Every submitted task is billed. The operator records the task id in the task
    instance's ``task_state_store`` (Airflow 3.3+) right after the submit; a retry (after a worker crash, a
    triggerer error, a timeout...) reattaches to that task (Pending/Running: waits for it; Success: uses
    it) and submits afresh only if it failed. The record is dropped when the Airflow task succeeds, so
    clearing a finished task generates a new video. A submit that ended ambiguously
    (:class:`KlingSubmitUncertainError`, or a worker that died during it) is never resent blindly: later
    tries fail with instructions until the task is looked up. Each submit carries an ``external_task_id``
    (by default derived from the DAG, run, task, map index and try) to find it in the vendor's console.

    :param prompt: the text prompt (R1, R2; may reference ``<<<image_N>>>``/``<<<video_N>>>``, R12).
    :param negative_prompt: what to avoid (R2).
    :param mode: ``std`` (720p) or ``pro`` (1080p) (R13).
    :param aspect_ratio: ``16:9``, ``9:16`` or ``1:1`` (R4).
    :param duration: seconds, 3 to 15 (R5).
    :param sound: ``on`` or ``off`` (R6).
    :param multi_shot: whether ``multi_prompt`` describes the shots (R3, R7, R8).
    :param shot_type: ``customize`` for multi-shot videos (R7).
    :param multi_prompt: the shots, ``[{"index", "prompt", "duration"}]`` (R8..R11).
    :param image_list: reference images, ``[{"image_url", "type"}]`` (URL, ``s3://`` or bare base64;
        R14..R19).
    :param video_list: at most one reference video, ``[{"video_url", "refer_type",
        "keep_original_sound"}]`` (R20..R22).
    :param watermark_enabled: whether the result carries a watermark.
    :param external_task_id: your own id for the task, instead of the derived default. The API wants it
        unique per user, and a retry after a failed task submits again with it: template the try into it
        (``"campaign-42-{{ ti.try_number }}"``) if the task has retries.
    :param request: the whole request instead of the keyword arguments above: a body dict, a
        :class:`KlingVideoRequest`, or JSON text (what a template renders) (``external_task_id`` may
        still be given as a keyword).
    :param kling_conn_id: the Airflow connection of the ModelVerse API.
    :param aws_conn_id: the AWS connection used to read ``s3://`` inputs.
    :param wait_for_completion: whether to wait for the task and return the finished-task dict.
    :param poll_interval: seconds between two status queries while waiting: above 0, at most a day.
    :param timeout: seconds the whole wait may take (enforced by the trigger itself too): 0 to a week.
    :param deferrable: wait in the triggerer (``True``, the default) rather than on the worker.
    :raises ValueError: when the DAG is parsed: an invalid static request, or a ``poll_interval`` or
        ``timeout`` that is out of range, ``nan`` or infinite.
    """

    template_fields: Sequence[str] = ("kling_conn_id", "aws_conn_id", "request", *REQUEST_FIELDS)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "request": "json",
        "multi_prompt": "json",
        "image_list": "json",
        "video_list": "json",
    }
    ui_color = "#f0e4ff"
    operator_extra_links = (KlingVideoLink(), KlingTaskStatusLink())

    def __init__(
        self,
        *,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        mode: str | None = None,
        aspect_ratio: str | None = None,
        duration: int | str | None = None,
        sound: str | None = None,
        multi_shot: bool | str | None = None,
        shot_type: str | None = None,
        multi_prompt: list[dict[str, Any]] | str | None = None,
        image_list: list[dict[str, Any]] | str | None = None,
        video_list: list[dict[str, Any]] | str | None = None,
        watermark_enabled: bool | str | None = None,
        external_task_id: str | None = None,
        request: dict[str, Any] | KlingVideoRequest | str | None = None,
        kling_conn_id: str = DEFAULT_CONN_ID,
        aws_conn_id: str | None = "aws_default",
        wait_for_completion: bool = False,
        poll_interval: timedelta | float = DEFAULT_POLL_INTERVAL,
        timeout: timedelta | float = DEFAULT_WAIT_TIMEOUT,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.mode = mode
        self.aspect_ratio = aspect_ratio
        self.duration = duration
        self.sound = sound
        self.multi_shot = multi_shot
        self.shot_type = shot_type
        self.multi_prompt = multi_prompt
        self.image_list = image_list
        self.video_list = video_list
        self.watermark_enabled = watermark_enabled
        self.external_task_id = external_task_id
        self.request = request.to_api_body() if isinstance(request, BaseModel) else request
        self.kling_conn_id = kling_conn_id
        self.aws_conn_id = aws_conn_id
        self.wait_for_completion = wait_for_completion
        self.poll_interval = check_poll_interval(poll_interval, "poll_interval")
        self.timeout = check_wait_timeout(timeout, "timeout")
        self.deferrable = deferrable
        #: The Kling task this run follows and, once it succeeded, its finished-task dict (for the links).
        self.kling_task_id: str | None = None
        self.kling_result: dict[str, Any] | None = None

        given = [
            name for name in REQUEST_FIELDS if name != "external_task_id" and getattr(self, name) is not None
        ]
        if self.request is not None and given:
            raise ValueError(
                f"Task {self.task_id!r}: give the request either as `request` or as keyword arguments, "
                f"not both (got `request` and {', '.join(given)})"
            )
        # A mapped task is unmapped at run time by calling __init__ again with the expanded values: an
        # invalid one must then fail its task without retries (in execute), not raise a retried ValueError.
        unmapped = getattr(self, "_BaseOperator__from_mapped", False)
        if not unmapped and all(is_static(getattr(self, name)) for name in ("request", *REQUEST_FIELDS)):
            self._validate_request(self.build_request(), at_parse_time=True)

    @cached_property
    def hook(self) -> KlingHook:
        """The hook of ``kling_conn_id``."""
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(kling_conn_id=self.kling_conn_id)

    def build_request(self) -> KlingVideoRequest | ValidationError:
        """
        Build the request from the (rendered) arguments; return the validation error instead of raising.

        A ``request`` that rendered to text (a template without native rendering, or one native rendering
        left as text, such as JSON holding ``false``) is read as JSON.

        :raises ValueError: ``request`` is neither a mapping nor the text of a JSON object.
        """
        from airflow_provider_kling.models import KlingVideoRequest

        try:
            if self.request is not None:
                request = KlingVideoRequest.model_validate(self._request_mapping())
                if self.external_task_id:
                    request = request.with_external_task_id(self.external_task_id)
                return request
            fields = {name: getattr(self, name) for name in REQUEST_FIELDS}
            return KlingVideoRequest.build(
                **{name: value for name, value in fields.items() if value is not None}
            )
        except ValidationError as error:
            return error

    def _request_mapping(self) -> dict[str, Any]:
        value = self.request
        if isinstance(value, str):
            try:
                value = json.loads(str(value))
            except ValueError as error:
                raise ValueError(
                    f"Task {self.task_id!r}: `request` rendered to text that is not JSON ({error}): give a "
                    "dict, a KlingVideoRequest, an XComArg or a template rendering a JSON object"
                ) from None
        if not isinstance(value, Mapping):
            raise ValueError(
                f"Task {self.task_id!r}: `request` must be a dict or a KlingVideoRequest (or the JSON text "
                f"of one), got {type(value).__name__}"
            )
        return dict(value)

    def _validate_request(
        self, request: KlingVideoRequest | ValidationError, *, at_parse_time: bool = False
    ) -> KlingVideoRequest:
        if not isinstance(request, ValidationError):
            return request
        message = f"Task {self.task_id!r}: invalid Kling request: {describe_validation_error(request)}"
        if at_parse_time:
            raise ValueError(message) from request
        # Rendering is deterministic: retrying the same request cannot help, and nothing was spent.
        raise AirflowFailException(message) from request

    def execute(self, context: Context) -> str | dict[str, Any]:
        """Reattach to the task an earlier try paid for, or submit one; then wait for it if asked to."""
        from airflow_provider_kling import records
        from airflow_provider_kling.models import TaskStatus

        started = time.monotonic()
        try:
            built = self.build_request()
        except ValueError as error:  # what was rendered can never be a request: no retry can help
            raise AirflowFailException(str(error)) from error
        request = self._with_default_external_task_id(self._validate_request(built), context)
        digest = request_digest(request)
        ledger = KlingTaskLedger.open(context, self.log)
        with self.hook:  # closes the hook's HTTP client however this ends (a deferral included)
            earlier = self._earlier_task(ledger, context, digest)
            body, conn_id = request.to_api_body(), self.kling_conn_id  # the record of the Kling view
            if earlier is not None and earlier.status == TaskStatus.SUCCESS:
                records.keep_submitted(
                    context,
                    body=body,
                    kling_task_id=earlier.task_id,
                    kling_conn_id=conn_id,
                    result=earlier.as_result(),
                )
                return self._succeed(ledger, earlier)
            if earlier is not None and not earlier.status.is_terminal:
                self.kling_task_id, status = earlier.task_id, earlier.status.value
            else:
                self.kling_task_id, status = self._submit(request, ledger, digest), "Pending"
            records.keep_submitted(
                context, body=body, kling_task_id=self.kling_task_id, kling_conn_id=conn_id, status=status
            )
            if not self.wait_for_completion:
                ledger.forget()
                return self.kling_task_id
            wait_timeout = wait_budget(self.timeout, self.execution_timeout, started)
            if wait_timeout < self.timeout:
                self.log.info("Waiting at most %.1f s: what is left of execution_timeout", wait_timeout)
            if self.deferrable:
                self._defer(self.kling_task_id, wait_timeout)
            task = self.hook.wait_for_task(
                self.kling_task_id, poll_interval=self.poll_interval, timeout=wait_timeout
            )
            records.record_finished_task(context, task.as_result(), kling_conn_id=conn_id)
            return self._succeed(ledger, task)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """
        Resume after :class:`KlingTaskTrigger` fired: return the finished-task dict, or raise.

        :param context: the task's context.
        :param event: the trigger's event payload.
        """
        from airflow_provider_kling.records import record_finished_task
        from airflow_provider_kling.triggers.kling import finished_task_from_event

        self.kling_task_id = event.get("kling_task_id")
        record_finished_task(context, event, kling_conn_id=self.kling_conn_id)
        result = finished_task_from_event(event)
        ledger = KlingTaskLedger.open(context, self.log)
        ledger.forget()
        self.kling_result = result
        log_finished_task(self.log, result)
        return result

    def _with_default_external_task_id(
        self, request: KlingVideoRequest, context: Context
    ) -> KlingVideoRequest:
        if request.parameters.external_task_id:
            return request
        ti = context["ti"]
        return request.with_external_task_id(
            default_external_task_id(
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=ti.map_index,
                try_number=ti.try_number,
            )
        )

    def _earlier_task(self, ledger: KlingTaskLedger, context: Context, digest: str) -> KlingTask | None:
        """Return the task an earlier try submitted (reattach to it), or ``None`` when a submit is due."""
        from airflow_provider_kling.models import TaskStatus

        recalled = ledger.recall()
        if recalled is None:
            return None
        kling_task_id = recalled.kling_task_id
        if not recalled.is_for(digest):
            # The request changed since (a fixed Variable, a shifted mapped list, a template on the try):
            # the earlier task's video is not this request's. It stays billed; this try pays for its own.
            self.log.warning(
                "The request changed since an earlier try submitted Kling task %s (external_task_id %s): "
                "that paid task is ABANDONED and a task for the new request is submitted",
                kling_task_id or "<never confirmed>",
                recalled.external_task_id,
            )
            return None
        if kling_task_id is None:
            raise AirflowFailException(unconfirmed_submit_message(context, recalled.external_task_id))
        task = self.hook.get_task(kling_task_id)
        if task.status == TaskStatus.FAILURE:
            self.log.warning(
                "Kling task %s of an earlier try failed (%s): submitting a new task",
                kling_task_id,
                task.error_message or "no error message given",
            )
            return None
        self.log.info(
            "Reattaching to Kling task %s of an earlier try: it is %s", kling_task_id, task.status.value
        )
        return task

    def _submit(self, request: KlingVideoRequest, ledger: KlingTaskLedger, digest: str) -> str:
        if request.has_s3_inputs:
            from airflow_provider_kling.s3_inputs import resolve_s3_inputs

            request = resolve_s3_inputs(request, aws_conn_id=self.aws_conn_id)
        external_task_id = request.parameters.external_task_id
        try:
            ledger.begin_submit(external_task_id, digest)
        except Exception as error:
            raise RuntimeError(
                f"Could not record the coming Kling submit in the task state store ({error}): nothing was "
                "submitted and nothing is billed. A retry submits once the store can be written."
            ) from error
        try:
            kling_task_id = self.hook.submit_task(request)
        except KlingSubmitUncertainError:
            raise  # the record stays without a task id: no later try resends blindly
        except (KlingTaskCreationError, KlingBadRequestError) as error:
            ledger.forget()  # the API refused this request: the same request can never pass
            raise AirflowFailException(f"The Kling API refused the request: {error}") from error
        except KlingError:
            ledger.forget()  # the hook proved that no task was created
            raise
        ledger.record(kling_task_id, external_task_id, digest)
        self.log.info(
            "Recorded Kling task %s (external_task_id %s): a retry of this task reattaches to it",
            kling_task_id,
            external_task_id,
        )
        return kling_task_id

    def _defer(self, kling_task_id: str, timeout: float) -> None:
        from airflow_provider_kling.triggers.kling import defer_to_trigger

        defer_to_trigger(
            self,
            kling_task_id=kling_task_id,
            kling_conn_id=self.kling_conn_id,
            poll_interval=self.poll_interval,
            timeout=timeout,
        )

    def _succeed(self, ledger: KlingTaskLedger, task: KlingTask) -> str | dict[str, Any]:
        from airflow_provider_kling.models import TaskStatus

        if task.status == TaskStatus.FAILURE:
            raise KlingTaskFailedError(task.task_id, task.error_message)
        self.kling_task_id = task.task_id
        if not task.urls:
            raise no_result_error(task.task_id)  # the record stays: a retry reattaches, never pays again
        ledger.forget()
        if not self.wait_for_completion:
            return task.task_id
        result = task.as_result()
        self.kling_result = result
        log_finished_task(self.log, result)
        return result
