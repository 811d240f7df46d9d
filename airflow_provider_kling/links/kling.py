"""
Extra links of the Kling operators and sensor: the result video, and the finished task's status.

In Airflow 3 a link is computed once, on the worker, when the task instance finishes (and again after
each resume from deferral), and the UI shows that stored value. The links therefore read what the
operator learned while it ran: its ``kling_task_id`` and its finished-task dict ``kling_result``.

* **Kling video** opens the first result video. Result URLs are temporary (about
  :data:`~airflow_provider_kling.constants.RESULT_URL_TTL_HOURS` hours), so the link is only set while
  the URL is valid when the task instance finishes; copy the videos (``KlingToS3Operator``) for a durable
  link.
* **Kling task status** opens this task instance's XCom tab in the Airflow UI, where the finished-task dict
  (status, result URLs, billed seconds, submit and finish times) is shown. It does not point at the
  API's status endpoint on purpose: that endpoint needs the API key in a header, so a browser only gets
  ``401`` there, and a URL must never carry the key.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_provider_kling.constants import RESULT_URL_TTL_HOURS

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey


def result_url_is_valid(result: dict[str, Any], *, now: float | None = None) -> bool:
    """
    Whether the result URLs of a finished-task dict are still valid, judged by its ``finish_time``.

    :param result: a finished-task dict (``KlingTask.as_result()``).
    :param now: Unix time to judge at (default: now).
    """
    finish_time = result.get("finish_time")
    if not isinstance(finish_time, int | float):
        return True
    current = time.time() if now is None else now
    return current < finish_time + RESULT_URL_TTL_HOURS * 3600


class KlingVideoLink(BaseOperatorLink):
    """The first result video of the Kling task, while its temporary URL is valid."""

    name = "Kling video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """
        Return the first result URL, or ``""`` when there is none or it has expired.

        :param operator: the operator or sensor that waited for the task.
        :param ti_key: the task instance.
        """
        result = getattr(operator, "kling_result", None)
        if not isinstance(result, dict) or not result_url_is_valid(result):
            return ""
        urls = result.get("urls") or []
        return str(urls[0]) if urls else ""


class KlingTaskStatusLink(BaseOperatorLink):
    """The task instance's XCom tab in the Airflow UI: the Kling task's status and results."""

    name = "Kling task status"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """
        Return the Airflow UI page of the task instance's XComs, or ``""`` before a Kling task is known.

        :param operator: the operator or sensor that submitted or waited for the task.
        :param ti_key: the task instance.
        """
        if not getattr(operator, "kling_task_id", None):
            return ""
        from airflow.providers.common.compat.sdk import conf

        base_url = (conf.get("api", "base_url", fallback=None) or "").rstrip("/")
        path = f"dags/{quote(ti_key.dag_id, safe='')}/runs/{quote(ti_key.run_id, safe='')}"
        path += f"/tasks/{quote(ti_key.task_id, safe='')}"
        if ti_key.map_index is not None and ti_key.map_index >= 0:
            path += f"/mapped/{ti_key.map_index}"
        return f"{base_url}/{path}/xcom"
