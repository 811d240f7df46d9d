"""
What a whole API answer says: the id of the task a submit created, a task's status, or the error it is.

Pure functions over an :class:`~airflow_provider_kling.hooks._errors.Answer` read by
:mod:`~airflow_provider_kling.hooks._transport`: a non-2xx status, a body that is not JSON, a 2xx body
carrying an error, or one holding no usable task each raise the exception of the provider's error tree
that :class:`~airflow_provider_kling.hooks.kling.KlingHook` retries (or not) by its policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from airflow_provider_kling.hooks._errors import (
    GARBLED_ANSWER_ERRORS,
    api_error,
    decode_json,
    embedded_error,
    malformed_response_error,
)
from airflow_provider_kling.models import KlingSubmitResult, KlingTask

if TYPE_CHECKING:
    from airflow_provider_kling.exceptions import KlingAPIError
    from airflow_provider_kling.hooks._errors import Answer
    from airflow_provider_kling.hooks._settings import KlingSettings


def answer_payload(answer: Answer, settings: KlingSettings, what: str) -> Any:
    """
    Return the decoded JSON of a successful answer; raise the error an unsuccessful or unreadable one is.

    :param answer: the whole answer.
    :param settings: the connection's settings (its key is redacted from every error).
    :param what: the operation, for the messages.
    """
    if not 200 <= answer.status_code < 300:
        raise api_error(
            answer.status_code, answer.headers, answer.content, what=what, api_key=settings.api_key
        )
    try:
        return decode_json(answer.content)
    except ValueError:
        raise malformed_response_error(
            answer.status_code,
            answer.content,
            what=what,
            problem="a body that is not JSON",
            api_key=settings.api_key,
        ) from None


def submitted_task_id(answer: Answer, settings: KlingSettings) -> str:
    """
    Return the id of the task a submit's answer reports.

    :param answer: the whole answer of the submit.
    :param settings: the connection's settings.
    """
    payload = answer_payload(answer, settings, "submit")
    try:
        return KlingSubmitResult.from_api(payload).task_id
    except (ValidationError, *GARBLED_ANSWER_ERRORS) as error:
        raise embedded_or_malformed_error(answer, payload, settings, "submit") from error


def task_from_answer(answer: Answer, settings: KlingSettings, what: str, task_id: str) -> KlingTask:
    """
    Return the task a status answer reports, refusing the status of any other task.

    :param answer: the whole answer of the status query.
    :param settings: the connection's settings.
    :param what: the operation, for the messages.
    :param task_id: the task that was asked about.
    """
    payload = answer_payload(answer, settings, what)
    output = payload.get("output") if isinstance(payload, dict) else None
    if isinstance(output, dict) and output.get("task_id") and output.get("task_status"):
        try:
            task = KlingTask.from_api(payload)
        except (ValidationError, *GARBLED_ANSWER_ERRORS):
            pass
        else:
            if task.task_id == task_id:
                return task
            raise malformed_response_error(
                answer.status_code,
                answer.content,
                what=what,
                problem=f"the status of another task ({task.task_id})",
                api_key=settings.api_key,
            )
    raise embedded_or_malformed_error(answer, payload, settings, what)


def embedded_or_malformed_error(
    answer: Answer, payload: Any, settings: KlingSettings, what: str
) -> KlingAPIError:
    """
    Return the error a 2xx body carries instead of its output, or else the error calling the body malformed.

    :param answer: the whole answer.
    :param payload: its decoded JSON.
    :param settings: the connection's settings.
    :param what: the operation, for the messages.
    """
    details = embedded_error(payload)
    if details is not None:
        return api_error(
            answer.status_code,
            answer.headers,
            answer.content,
            what=what,
            api_key=settings.api_key,
            details=details,
        )
    return malformed_response_error(
        answer.status_code,
        answer.content,
        what=what,
        problem="a body that holds no usable task",
        api_key=settings.api_key,
    )
