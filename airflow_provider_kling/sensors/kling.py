"""The sensor that waits for a Kling task: deferrable by default, poke and reschedule modes available."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
)

from airflow_provider_kling.constants import DEFAULT_CONN_ID, DEFAULT_POLL_INTERVAL, DEFAULT_WAIT_TIMEOUT
from airflow_provider_kling.exceptions import KlingError, KlingTaskFailedError, KlingTaskTimeoutError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.links.kling import KlingTaskStatusLink, KlingVideoLink
from airflow_provider_kling.models import TaskStatus, check_kling_task_id
from airflow_provider_kling.triggers.kling import KlingTaskTrigger, finished_task_from_event
from airflow_provider_kling.waiting import check_poll_interval, check_wait_timeout, no_result_error

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class KlingTaskSensor(BaseSensorOperator):
    """
    Wait for a Kling task to finish; return its finished-task dict.

    Typically downstream of :class:`KlingSubmitVideoOperator`:
    ``KlingTaskSensor(task_id="wait", kling_task_id="{{ ti.xcom_pull('submit') }}")``.

    Deferrable by default: after one status query on the worker it hands the wait to
    :class:`KlingTaskTrigger`, whose ``poll_interval`` is this sensor's ``poke_interval`` and whose
    ``timeout`` is this sensor's ``timeout``. With ``deferrable=False`` it pokes in ``poke`` or
    ``reschedule`` mode. Either way it returns (XCom ``return_value``) the finished-task dict
    ``{"kling_task_id", "status", "urls", "usage_seconds", "submit_time", "finish_time"}``; a failed Kling
    task fails it with :class:`KlingTaskFailedError` and the vendor's message; a timeout raises
    :class:`AirflowSensorTimeout`, so ``soft_fail=True`` turns it into a skip. Transient API errors (rate
    limits, 5xx, network) are ridden out until the timeout; auth or not-found errors fail the sensor. A
    ``Success`` without a result URL fails it with :class:`KlingTaskNotReadyError` (a retry queries the
    task again; nothing is paid twice). The rendered ``kling_task_id`` is checked before any HTTP call: a
    malformed id (empty, a path, a control or non-ASCII character, too long) fails the task without
    retries.

    :param kling_task_id: the API's task id (templated).
    :param kling_conn_id: the Airflow connection of the ModelVerse API (templated).
    :param deferrable: wait in the triggerer (``True``, the default) rather than on the worker.
    :param poke_interval: seconds between two status queries (default 30): above 0, at most a day.
    :param timeout: seconds the whole wait may take (default 3600): 0 to a week.
    :raises ValueError: ``poke_interval`` or ``timeout`` is out of range, ``nan`` or infinite (when the
        DAG is parsed).
    """

    template_fields: Sequence[str] = ("kling_task_id", "kling_conn_id")
    ui_color = "#e8dcff"
    operator_extra_links = (KlingVideoLink(), KlingTaskStatusLink())

    def __init__(
        self,
        *,
        kling_task_id: str,
        kling_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = True,
        poke_interval: timedelta | float = DEFAULT_POLL_INTERVAL,
        timeout: timedelta | float = DEFAULT_WAIT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        # Checked before BaseSensorOperator sees them (it turns nan into an obscure error and inf into an
        # OverflowError) and again after (what it made of them is what the waits use).
        super().__init__(
            poke_interval=check_poll_interval(poke_interval, "poke_interval"),
            timeout=check_wait_timeout(timeout, "timeout"),
            **kwargs,
        )
        self.poke_interval = check_poll_interval(self.poke_interval, "poke_interval")
        self.timeout = check_wait_timeout(self.timeout, "timeout")
        self.kling_task_id = kling_task_id
        self.kling_conn_id = kling_conn_id
        self.deferrable = deferrable
        #: The finished-task dict, once the task succeeded (for the links).
        self.kling_result: dict[str, Any] | None = None
        self._last_status: TaskStatus | None = None

    @cached_property
    def hook(self) -> KlingHook:
        """The hook of ``kling_conn_id``."""
        return KlingHook(kling_conn_id=self.kling_conn_id)

    def execute(self, context: Context) -> Any:
        """Check the task once; if it still runs, wait in the triggerer (or poke when not deferrable)."""
        self._checked_task_id()
        with self.hook:  # closes the hook's HTTP client however this ends (a deferral included)
            if not self.deferrable:
                return super().execute(context)
            done = self.poke(context)
        if done:
            return done.xcom_value
        self.log.info(
            "Waiting for Kling task %s in the triggerer: a status query every %g s, for up to %g s",
            self.kling_task_id,
            self.poke_interval,
            self.timeout,
        )
        self.defer(
            trigger=KlingTaskTrigger(
                kling_task_id=self.kling_task_id,
                kling_conn_id=self.kling_conn_id,
                poll_interval=self.poke_interval,
                timeout=self.timeout,
            ),
            method_name="execute_complete",
            # A backstop only: the trigger ends the wait itself, with a clearer event, at `timeout`.
            timeout=timedelta(seconds=self.timeout + max(60.0, 2 * self.poke_interval)),
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """
        Query the task's status once.

        :param context: the task's context.
        :raises AirflowFailException: the rendered ``kling_task_id`` is malformed.
        :raises KlingTaskFailedError: the task failed.
        :raises KlingTaskNotReadyError: the task succeeded without result URLs.
        """
        kling_task_id = self._checked_task_id()
        try:
            task = self.hook.get_task(kling_task_id)
        except KlingError as error:
            if not KlingHook.is_retryable_error(error):
                raise
            self.log.warning(
                "Kling task %s: status query failed (%s), trying again", self.kling_task_id, error
            )
            return PokeReturnValue(is_done=False)
        if task.status != self._last_status:
            self.log.info("Kling task %s is %s", self.kling_task_id, task.status.value)
            self._last_status = task.status
        if task.status == TaskStatus.FAILURE:
            raise KlingTaskFailedError(task.task_id, task.error_message)
        if task.status != TaskStatus.SUCCESS:
            return PokeReturnValue(is_done=False)
        if not task.urls:
            raise no_result_error(task.task_id)
        self.kling_result = task.as_result()
        self._log_success(self.kling_result)
        return PokeReturnValue(is_done=True, xcom_value=self.kling_result)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """
        Resume after :class:`KlingTaskTrigger` fired: return the finished-task dict, or raise.

        :param context: the task's context.
        :param event: the trigger's event payload.
        """
        try:
            result = finished_task_from_event(event)
        except KlingTaskTimeoutError as error:
            raise AirflowSensorTimeout(str(error)) from error
        self.kling_result = result
        self._log_success(result)
        return result

    def _checked_task_id(self) -> str:
        """Return the rendered ``kling_task_id``, or fail the task without retries if it is malformed."""
        try:
            return check_kling_task_id(self.kling_task_id, field="kling_task_id")
        except ValueError as error:
            # The id is rendered from the DAG or an XCom: a retry renders the same, and nothing was spent.
            raise AirflowFailException(f"Task {self.task_id!r}: {error}") from error

    def _log_success(self, result: dict[str, Any]) -> None:
        self.log.info(
            "Kling task %s succeeded: %d video(s), %s s billed",
            result["kling_task_id"],
            len(result.get("urls") or []),
            result.get("usage_seconds"),
        )
