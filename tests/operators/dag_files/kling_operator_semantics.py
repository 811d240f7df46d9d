"""
Test-only DAG of issue 10's operator items, run by ``airflow dags test`` in ``test_semantics_dags.py``.

* ``changes_request`` / ``mapped_changes``: the first try dies right after its (recorded, billed) submit and
  the request renders differently on the retry (a template on ``ti.try_number``): the retry must submit the
  new request, not return the earlier task's video. Mapped: only the index whose try died is affected.
* ``same_request``: the same death, an unchanged request: the retry reattaches (one paid task).
* ``execution_timeout``: a 4 s ``execution_timeout`` on a deferred wait for a video that takes 6 s: the try
  fails on time and its retry reattaches.
* ``mapped_invalid``: one invalid prompt among valid ones, ``retries=2``: that index fails at once.
* ``json_text_request``: ``request`` as a JSON text template without native rendering.

Connection (set by the test): ``kling_default`` (a simulator whose tasks take ``task_seconds``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator

FAST: dict[str, Any] = {"wait_for_completion": True, "poll_interval": 0.2, "timeout": 120}
RETRY_ONCE: dict[str, Any] = {"retries": 1, "retry_delay": timedelta(seconds=1)}


class DiesAfterSubmit(KlingSubmitVideoOperator):
    """The first try dies right after its (recorded, billed) submit, as a lost worker would."""

    def execute(self, context: Any) -> Any:
        self.try_number = context["ti"].try_number
        return super().execute(context)

    def defer(self, **kwargs: Any) -> Any:
        if self.try_number == 1:
            raise RuntimeError("injected: the worker died right after the submit")
        return super().defer(**kwargs)


with DAG(dag_id="kling_operator_semantics", schedule=None, catchup=False, doc_md=__doc__) as dag:
    changes_request = DiesAfterSubmit(
        task_id="changes_request",
        prompt="a harbour at night, take {{ ti.try_number }}",
        aspect_ratio="16:9",
        **FAST,
        **RETRY_ONCE,
    )
    same_request = DiesAfterSubmit(
        task_id="same_request",
        prompt="the same request on every try",
        aspect_ratio="16:9",
        **FAST,
        **RETRY_ONCE,
    )
    mapped_changes = DiesAfterSubmit.partial(
        task_id="mapped_changes",
        aspect_ratio="1:1",
        negative_prompt="blur, take {{ ti.try_number }}",
        **FAST,
        **RETRY_ONCE,
    ).expand(prompt=["mapped a", "mapped b"])
    execution_timeout = KlingSubmitVideoOperator(
        task_id="execution_timeout",
        kling_conn_id="kling_slow",
        prompt="a video that outlives its execution_timeout",
        aspect_ratio="16:9",
        wait_for_completion=True,
        poll_interval=0.5,
        timeout=3600,
        execution_timeout=timedelta(seconds=4),
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
    mapped_invalid = KlingSubmitVideoOperator.partial(
        task_id="mapped_invalid",
        aspect_ratio="9:16",
        retries=2,
        retry_delay=timedelta(seconds=1),
        trigger_rule="all_done",
        **FAST,
    ).expand(prompt=["a valid prompt", "x" * 2501])
    json_text_request = KlingSubmitVideoOperator(
        task_id="json_text_request",
        # JSON text, as a template renders it.
        request=(
            '{"model": "kling-v3-omni", "input": {"prompt": "{{ dag.dag_id }} as JSON text"}, '
            '"parameters": {"aspect_ratio": "1:1", "watermark_enabled": false}}'
        ),
        trigger_rule="all_done",
        **FAST,
    )
    (
        changes_request
        >> same_request
        >> mapped_changes
        >> execution_timeout
        >> mapped_invalid
        >> json_text_request
    )
