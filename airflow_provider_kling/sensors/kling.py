"""The sensor that waits for a Kling task: deferrable by default, poke and reschedule modes available."""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
    BaseSensorOperator,
    PokeReturnValue,
)

from airflow_provider_kling._compat import TaskDeferralError, TaskDeferralTimeout
from airflow_provider_kling.constants import DEFAULT_CONN_ID, DEFAULT_POLL_INTERVAL, DEFAULT_WAIT_TIMEOUT
from airflow_provider_kling.exceptions import KlingError, KlingTaskFailedError, KlingTaskTimeoutError
from airflow_provider_kling.links.kling import KlingTaskStatusLink, KlingVideoLink
from airflow_provider_kling.waiting import (
    check_poll_interval,
    check_wait_timeout,
    log_finished_task,
    no_result_error,
    wait_budget,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import TaskStatus

# The hook, the models and the trigger are imported where they are used: every DAG file that uses this
# sensor imports this module at every parse (see benchmarks/bench_imports.py).


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
    :class:`AirflowSensorTimeout`. Transient API errors (rate limits, 5xx, network) are ridden out until
    the timeout; auth or not-found errors fail the sensor. A ``Success`` without a result URL fails it
    with :class:`KlingTaskNotReadyError` (a retry queries the task again; nothing is paid twice). The
    rendered ``kling_task_id`` is checked before any HTTP call: a malformed id (empty, a path, a control or
    non-ASCII character, too long) fails the task without retries.

    ``soft_fail``, ``never_fail`` and ``silent_fail`` end the deferrable path in the state they end poke
    and reschedule modes (:meth:`BaseSensorOperator.execute`): ``soft_fail`` skips on the timeout,
    ``never_fail`` on the other errors, and ``silent_fail`` logs such an error and ends as the timeout
    would: after ``timeout`` when poking, at once when deferrable (the trigger does not ride these errors
    out). See ``docs/sensors.md`` for retries, clears, marks and ``execution_timeout``.

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
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(kling_conn_id=self.kling_conn_id)

    def execute(self, context: Context) -> Any:  # noqa: RET503 (defer_to_trigger raises TaskDeferred)
        """Check the task once; if it still runs, wait in the triggerer (or poke when not deferrable)."""
        started = time.monotonic()
        self._checked_task_id()
        with self.hook:  # closes the hook's HTTP client however this ends (a deferral included)
            if not self.deferrable:
                return super().execute(context)
            try:
                done = self.poke(context)
            except (Exception, AirflowTaskTimeout) as error:
                self._handle_poke_error(error)  # raises, except under silent_fail: wait in the triggerer
                done = PokeReturnValue(is_done=False)
        if done:
            return done.xcom_value
        from airflow_provider_kling.triggers.kling import defer_to_trigger

        defer_to_trigger(
            self,
            kling_task_id=self.kling_task_id,
            kling_conn_id=self.kling_conn_id,
            poll_interval=self.poke_interval,
            timeout=wait_budget(self.timeout, self.execution_timeout, started),
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """
        Query the task's status once.

        :param context: the task's context.
        :raises AirflowFailException: the rendered ``kling_task_id`` is malformed.
        :raises KlingTaskFailedError: the task failed.
        :raises KlingTaskNotReadyError: the task succeeded without result URLs.
        """
        from airflow_provider_kling.models import TaskStatus

        kling_task_id = self._checked_task_id()
        try:
            task = self.hook.get_task(kling_task_id)
        except KlingError as error:
            if not self.hook.is_retryable_error(error):
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
        log_finished_task(self.log, self.kling_result)
        return PokeReturnValue(is_done=True, xcom_value=self.kling_result)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """
        Resume after :class:`KlingTaskTrigger` fired: return the finished-task dict, or end as poking would.

        :param context: the task's context.
        :param event: the trigger's event payload.
        """
        from airflow_provider_kling.triggers.kling import finished_task_from_event

        try:
            result = finished_task_from_event(event)
        except KlingTaskTimeoutError as error:
            if (
                self.execution_timeout is not None and error.timeout < self.timeout
            ):  # cut to execution_timeout
                raise AirflowTaskTimeout(
                    f"{error}: the task's execution_timeout ({self.execution_timeout}) ran out while waiting"
                ) from error
            self._time_out(str(error), error)
        except KlingError as error:
            self._give_up(error)
        self.kling_result = result
        log_finished_task(self.log, result)
        return result

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """
        Resume after the deferral; end a failed trigger as poke mode would end the same error.

        :meth:`BaseSensorOperator.resume_execution` is bypassed on purpose: it skips every Airflow error under
        ``never_fail``, the timeout included, and every one under ``soft_fail``, a failed trigger included,
        where poke and reschedule modes fail them. :meth:`execute_complete` already ends each event as
        they do; the trigger's own failure (Airflow's backstop timeout, a crash) is ended here.

        :param next_method: the method to resume with.
        :param next_kwargs: its keyword arguments (the event).
        :param context: the task's context.
        """
        try:
            return super(BaseSensorOperator, self).resume_execution(next_method, next_kwargs, context)
        except TaskDeferralTimeout as error:  # Airflow's backstop behind the trigger's own timeout
            self._time_out(f"The wait for Kling task {self.kling_task_id} timed out: {error}", error)
        except TaskDeferralError as error:  # the trigger failed instead of firing an event
            self._give_up(error)

    def _handle_poke_error(self, error: BaseException) -> None:
        """
        Do with ``error``, raised by a poke, what :meth:`BaseSensorOperator.execute` does with it.

        Airflow's fail and timeout errors skip under ``soft_fail`` or ``never_fail``; any other error is
        logged under ``silent_fail`` (this returns; the caller waits on), skips under ``never_fail``, or is
        raised.
        """
        if isinstance(error, AirflowSkipException):
            raise error
        if isinstance(error, AirflowSensorTimeout | AirflowTaskTimeout | AirflowFailException):
            if self.soft_fail or self.never_fail:
                flag = "soft_fail" if self.soft_fail else "never_fail"
                raise AirflowSkipException(f"Skipping due to {flag} is set to True.") from error
            raise error
        if self.silent_fail:
            self.log.error("Sensor poke failed (silent_fail is set): %s", error)
            return
        if self.never_fail:
            raise AirflowSkipException("Skipping due to never_fail is set to True.") from error
        raise error

    def _give_up(self, error: Exception) -> NoReturn:
        """Handle an error the wait cannot get past; under ``silent_fail``, end in the timeout at once."""
        self._handle_poke_error(error)
        # silent_fail: poke mode would query again until the timeout. The trigger does not ride this error
        # out (a failed task stays failed), so end now as that timeout would.
        self._time_out(
            f"{error} (silent_fail is set: this error is not ridden out by waiting, so the sensor ends as "
            f"its timeout of {self.timeout:g} s would)",
            error,
        )

    def _time_out(self, message: str, error: BaseException) -> NoReturn:
        """End the wait as the timeout of poke mode does: skip under ``soft_fail``, else fail, no retries."""
        if self.soft_fail:
            raise AirflowSkipException(message) from error
        raise AirflowSensorTimeout(message) from error

    def _checked_task_id(self) -> str:
        """Return the rendered ``kling_task_id``, or fail the task without retries if it is malformed."""
        from airflow_provider_kling.models import check_kling_task_id

        try:
            return check_kling_task_id(self.kling_task_id, field="kling_task_id")
        except ValueError as error:
            # The id is rendered from the DAG or an XCom: a retry renders the same, and nothing was spent.
            raise AirflowFailException(f"Task {self.task_id!r}: {error}") from error
