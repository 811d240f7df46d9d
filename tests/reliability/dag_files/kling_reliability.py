"""
Test-only DAGs of the fault matrix (``tests/reliability/test_fault_matrix.py``), for a real scheduler,
triggerer and LocalExecutor.

The faults a DAG file can act out itself are injected through the task's ``task_state_store``, the
operator's public contract for "never pay twice": :class:`StoreFault` wraps the store of the faulty try and,
at one write, kills the task's own process with ``SIGKILL`` (as the OOM killer would) or fails the write the
way a failed Execution API call does (``AirflowRuntimeError``). The faults of the environment (API outage,
dead triggerer, wait timeout) are injected by the test, from outside.

* ``kling_reliability`` (every task must end in success):

  - ``worker_killed_after_submit``: try 1 dies right after the submit's task id was recorded;
  - ``worker_killed_before_submit``: try 1 dies right before the submit began (nothing recorded yet);
  - ``survives_triggerer_kill``: waits in the triggerer, which the test kills mid-poll and restarts;
  - ``rides_out_api_outage``: waits in the triggerer through an API outage the test injects;
  - ``wait_times_out``: try 1's wait times out while the task is Running; try 2 reattaches.

* ``kling_reliability_failing`` (every task must fail, having paid nothing):

  - ``worker_killed_after_begin_submit``: try 1 dies after recording "submit begun", before the request;
  - ``state_store_write_fails``: every write to the store fails.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from typing import Any, Final

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator

#: Seconds between two status queries of every wait here.
POLL_SECONDS: Final = 1.0
#: The wait timeout of the tasks that must not time out.
LONG_TIMEOUT: Final = 600.0
#: The wait timeout of ``wait_times_out`` (each try).
SHORT_TIMEOUT: Final = 90.0
#: The message of the injected state store failure.
STORE_FAILURE_MESSAGE: Final = "Injected fault: the state store is unavailable (database is locked)"

KILL_BEFORE_BEGIN: Final = "kill_before_begin"
KILL_AFTER_BEGIN: Final = "kill_after_begin"
KILL_AFTER_RECORD: Final = "kill_after_record"
FAIL_WRITES: Final = "fail_writes"


class StoreFault:
    """
    A ``task_state_store`` that acts out one fault at a write, and otherwise passes every call through.

    A write whose value carries a ``kling_task_id`` records a submitted task; any other write records that
    a submit is about to be sent ("submit begun").

    :param store: the task instance's real store.
    :param fault: ``kill_before_begin``, ``kill_after_begin``, ``kill_after_record`` or ``fail_writes``.
    :param log: the task's logger.
    """

    def __init__(self, store: Any, fault: str, log: Any) -> None:
        self.store = store
        self.fault = fault
        self.log = log

    def get(self, key: str, default: Any = None) -> Any:
        return self.store.get(key, default)

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        records_task = isinstance(value, dict) and bool(value.get("kling_task_id"))
        if self.fault == FAIL_WRITES:
            from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
            from airflow.sdk.execution_time.comms import ErrorResponse

            self.log.error("Injected fault: the write of %r to the task state store fails", key)
            raise AirflowRuntimeError(
                ErrorResponse(
                    error=ErrorType.API_SERVER_ERROR,
                    detail={"status_code": 500, "message": STORE_FAILURE_MESSAGE},
                )
            )
        if self.fault == KILL_BEFORE_BEGIN and not records_task:
            self._die("right before the submit began: nothing is recorded")
        self.store.set(key, value, **kwargs)
        if self.fault == KILL_AFTER_BEGIN and not records_task:
            self._die("after recording that a submit began, before the request")
        if self.fault == KILL_AFTER_RECORD and records_task:
            self._die(f"right after the submit of Kling task {value['kling_task_id']} was recorded")

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def clear(self) -> None:
        self.store.clear()

    def _die(self, when: str) -> None:
        self.log.error("Injected crash: the worker process kills itself with SIGKILL %s", when)
        os.kill(os.getpid(), signal.SIGKILL)


class FaultyKlingSubmit(KlingSubmitVideoOperator):
    """
    The submit operator, whose ``task_state_store`` acts out a :class:`StoreFault` in some tries.

    :param store_fault: the fault (see :class:`StoreFault`).
    :param faulty_tries: the try numbers that see it.
    """

    def __init__(self, *, store_fault: str, faulty_tries: tuple[int, ...] = (1,), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store_fault = store_fault
        self.faulty_tries = faulty_tries

    def execute(self, context: Any) -> Any:
        if context["ti"].try_number in self.faulty_tries:
            context["task_state_store"] = StoreFault(context["task_state_store"], self.store_fault, self.log)
        return super().execute(context)


WAIT: dict[str, Any] = {"wait_for_completion": True, "poll_interval": POLL_SECONDS, "aspect_ratio": "16:9"}
RETRY: dict[str, Any] = {"retries": 1, "retry_delay": timedelta(seconds=1)}

with DAG(
    dag_id="kling_reliability",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["kling", "test"],
) as dag:
    FaultyKlingSubmit(
        task_id="worker_killed_after_submit",
        prompt="fault matrix: the worker is killed right after the submit",
        store_fault=KILL_AFTER_RECORD,
        timeout=LONG_TIMEOUT,
        **WAIT,
        **RETRY,
    )
    FaultyKlingSubmit(
        task_id="worker_killed_before_submit",
        prompt="fault matrix: the worker is killed right before the submit",
        store_fault=KILL_BEFORE_BEGIN,
        timeout=LONG_TIMEOUT,
        **WAIT,
        **RETRY,
    )
    KlingSubmitVideoOperator(
        task_id="survives_triggerer_kill",
        prompt="fault matrix: the triggerer is killed mid-poll",
        timeout=LONG_TIMEOUT,
        **WAIT,
    )
    KlingSubmitVideoOperator(
        task_id="rides_out_api_outage",
        prompt="fault matrix: the API is down for a while",
        timeout=LONG_TIMEOUT,
        **WAIT,
    )
    KlingSubmitVideoOperator(
        task_id="wait_times_out",
        prompt="fault matrix: the wait times out",
        timeout=SHORT_TIMEOUT,
        **WAIT,
        **RETRY,
    )

with DAG(
    dag_id="kling_reliability_failing",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["kling", "test"],
) as failing_dag:
    FaultyKlingSubmit(
        task_id="worker_killed_after_begin_submit",
        prompt="fault matrix: the worker is killed between recording the submit and sending it",
        store_fault=KILL_AFTER_BEGIN,
        timeout=LONG_TIMEOUT,
        **WAIT,
        retries=2,
        retry_delay=timedelta(seconds=1),
    )
    FaultyKlingSubmit(
        task_id="state_store_write_fails",
        prompt="fault matrix: the task state store cannot be written",
        store_fault=FAIL_WRITES,
        faulty_tries=(1, 2),
        timeout=LONG_TIMEOUT,
        **WAIT,
        **RETRY,
    )
