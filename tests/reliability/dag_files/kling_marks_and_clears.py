"""
Test-only DAGs of the "never paying twice" rows on marks and clears
(``tests/reliability/test_marks_and_clears.py``), for a real scheduler, triggerer, LocalExecutor and API
server.

One DAG per row, each with one task, ``generate``: :class:`KlingSubmitVideoOperator` with
``wait_for_completion=True, deferrable=True`` and no retries (a try that fails stays failed, for the test to
see), against a simulator of the row's own (connection ``kling_marks_<row>``, created by the test), so that
each row's video is held and released on its own clock.
"""

from __future__ import annotations

from typing import Final

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator

TASK_ID: Final = "generate"
#: Seconds between two status queries of each wait.
POLL_SECONDS: Final = 1.0
#: Each row's prompt, by row name; a DAG ``kling_marks_<row>`` and a connection ``kling_marks_<row>`` each.
PROMPTS: Final = {
    "mark_success_then_clear": "marks and clears: marked success while rendering, then cleared",
    "clear_after_success": "marks and clears: cleared after a normal success",
    "mark_success_delete_key_then_clear": "marks and clears: marked success, record deleted, then cleared",
    "mark_failed_then_clear": "marks and clears: marked failed while rendering, then cleared",
}


def dag_id(row: str) -> str:
    """The DAG (and connection) id of a row."""
    return f"kling_marks_{row}"


for row, prompt in PROMPTS.items():
    with DAG(
        dag_id=dag_id(row),
        schedule=None,
        catchup=False,
        doc_md=__doc__,
        tags=["kling", "test"],
    ) as dag:
        KlingSubmitVideoOperator(
            task_id=TASK_ID,
            kling_conn_id=dag_id(row),
            prompt=prompt,
            aspect_ratio="16:9",
            wait_for_completion=True,
            deferrable=True,
            poll_interval=POLL_SECONDS,
            timeout=600,
            retries=0,
        )
    globals()[dag_id(row)] = dag
