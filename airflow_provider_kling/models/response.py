"""
The response models: the submit result, the task's status (:class:`KlingTask`) and valid Kling task ids.

A status answer is read whenever its load-bearing fields are: ``output.task_id`` (a valid id),
``output.task_status`` (any text; see TaskStatus) and ``output.urls`` (absent, null or a list of http(s)
URLs). Every other field is informational: whatever JSON it holds is coerced or dropped, never an error,
so that a finished, paid task is never unreadable over a field nobody needs.
"""

from __future__ import annotations

import json
import logging
import math
import re
from enum import StrEnum
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from airflow_provider_kling.models.rules import _SHOWN_CHARACTERS, _kind, _rule_error, _show

log = logging.getLogger(__name__)

#: Longest Kling task id (a provider rule: the API documents no limit).
MAX_KLING_TASK_ID_LENGTH: Final = 128
#: A Kling task id, to be matched with ``fullmatch``: 1 to 128 ASCII letters, digits, ``_`` and ``-``, not
#: starting with ``-`` (a provider rule: the API only says "string"). Every id seen matches (the spec's
#: ``task_id``, the simulator's 32 hex digits, UUIDs, Kling's numeric ids); a path separator, a dot,
#: whitespace, a control or a non-ASCII character never does, so an id is safe in an S3 key, a URL, a
#: header and a log line.
KLING_TASK_ID_PATTERN: Final = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_-]{{0,{MAX_KLING_TASK_ID_LENGTH - 1}}}")
#: Longest ``output.error_message`` kept, in characters; a longer one is cut and ends with ``...``.
MAX_ERROR_MESSAGE_LENGTH: Final = 2000
#: Longest ``request_id`` kept, in characters; a longer one is cut and ends with ``...``.
MAX_REQUEST_ID_LENGTH: Final = 256
#: Longest result URL, in characters: a longer one is refused (no HTTP server reads such a request line).
MAX_RESULT_URL_LENGTH: Final = 16_384

_TASK_ID_RULE: Final = (
    f"a Kling task id is 1 to {MAX_KLING_TASK_ID_LENGTH} ASCII letters, digits, '_' and '-', "
    "not starting with '-'"
)
#: The last second of the year 9999: a later ``submit_time``/``finish_time`` is absurd (or milliseconds).
_LATEST_UNIX_TIME: Final = 253_402_300_799
#: The largest integer every JSON reader (JavaScript's, in the Airflow UI) holds exactly.
_LARGEST_SAFE_INTEGER: Final = 2**53 - 1
#: A number as text: ASCII digits, an optional fraction and exponent; no ``nan``, ``inf`` or ``1_000``.
_NUMBER_TEXT = re.compile(
    r"\s*[+-]?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,3})?\s*"
)
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: NUL and the surrogates (in a ``str``, a surrogate is always a lone one): see :func:`_storable`.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_RESULT_URL_SCHEMES: Final = frozenset({"http", "https"})


class TaskStatus(StrEnum):
    """
    ``output.task_status`` of a task.

    A status the API adds later (say ``Expired``) does not break parsing: it becomes a pseudo-member that
    keeps the server's text, is not terminal, and is logged as a warning each time it is parsed, so
    callers keep polling within their own timeout.
    """

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILURE = "Failure"

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus | None:
        if not isinstance(value, str) or not value:
            return None
        for member in cls:
            if member.value.lower() == value.lower():
                return member
        log.warning("Unknown Kling task status %s: treating it as still in progress", _show_text(value))
        pseudo = str.__new__(cls, value)
        pseudo._name_ = value.upper()
        pseudo._value_ = value
        return pseudo

    @property
    def is_terminal(self) -> bool:
        """Whether the task has finished (``Success`` or ``Failure``); unknown statuses are not terminal."""
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILURE)


def check_kling_task_id(value: object, *, field: str = "kling_task_id") -> str:
    """
    Return ``value`` if it is a valid Kling task id (:data:`KLING_TASK_ID_PATTERN`), else raise.

    Use it wherever an id enters: an API answer, an operator's or sensor's argument, a trigger's kwargs. A
    valid id holds no path separator, dot, whitespace, control or non-ASCII character.

    :param value: the id to check.
    :param field: what the id is, for the message (e.g. ``kling_task_id`` or ``output.task_id``).
    :raises ValueError: ``value`` is not a string, or not a valid id; the message names ``field``, shows
        the value (escaped and cut) and says what is allowed, on one line.
    """
    if isinstance(value, str) and KLING_TASK_ID_PATTERN.fullmatch(value):
        return value
    raise ValueError(f"{field}: {_task_id_problem(value)}")


def _task_id_problem(value: object) -> str:
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}; {_TASK_ID_RULE}"
    return f"{_show_text(value)} is not a valid Kling task id; {_TASK_ID_RULE}"


def _show_text(value: str) -> str:
    """:func:`_show` of a string of any length, without building the ``repr`` of all of it."""
    return _show(value[: _SHOWN_CHARACTERS + 1])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _api_task_id(value: Any) -> str:
    """``output.task_id``: a valid id; a JSON integer (a numeric id) is read as its decimal text."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_KLING_TASK_ID_LENGTH:
        value = str(value)
    if isinstance(value, str) and KLING_TASK_ID_PATTERN.fullmatch(value):
        return value
    raise _rule_error("spec", "output.task_id", _task_id_problem(value))


def _task_status(value: Any) -> TaskStatus:
    """``output.task_status``: any non-empty text (an unknown status is kept, see :class:`TaskStatus`)."""
    if isinstance(value, TaskStatus):
        return value
    if isinstance(value, str) and value:
        return TaskStatus(value)
    got = "an empty string" if isinstance(value, str) else _kind(value)
    raise _rule_error("spec", "output.task_status", f"expected a status, got {got}")


def _result_urls(value: Any) -> list[str]:
    """``output.urls``: absent or null is no URL; anything but a list of http(s) URLs is an error."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise _rule_error("spec", "output.urls", f"expected a list of URLs, got {_kind(value)}")
    for position, url in enumerate(value):
        problem = _result_url_problem(url)
        if problem is not None:
            raise _rule_error("spec", f"output.urls[{position}]", problem)
    return list(value)


def _result_url_problem(url: Any) -> str | None:
    if not isinstance(url, str):
        return f"expected a string, got {_kind(url)}"
    if len(url) > MAX_RESULT_URL_LENGTH:
        return f"{len(url)} characters, at most {MAX_RESULT_URL_LENGTH}"
    if _CONTROL_CHARACTER.search(url):
        return f"{_show(url)} holds a control character"
    if url != url.strip():
        return f"{_show(url)} starts or ends with whitespace"
    try:
        url.encode("utf-8")
    except UnicodeError:
        return f"{_show(url)} is not valid Unicode"
    try:
        parts = urlsplit(url)
        usable = parts.scheme.lower() in _RESULT_URL_SCHEMES and bool(parts.hostname)
    except ValueError:  # a broken IPv6 host, say
        usable = False
    return None if usable else f"{_show(url)} is not an http(s) URL"


def _finite_number(value: Any) -> int | float | None:
    """A JSON number or numeric text as an ``int`` when integral, else a finite ``float``; else ``None``."""
    if isinstance(value, str):
        if len(value) > 64 or not _NUMBER_TEXT.fullmatch(value):
            return None
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() else value


def _unix_time(value: Any) -> int | float | None:
    """``submit_time``/``finish_time``: Unix seconds after 1970 and before the year 10000, else ``None``."""
    number = _finite_number(value)
    return number if number is not None and 0 < number <= _LATEST_UNIX_TIME else None


def _usage_seconds(value: Any) -> int | float | None:
    """``usage.duration``: non-negative seconds a JSON reader holds exactly, else ``None``."""
    number = _finite_number(value)
    return number if number is not None and 0 <= number <= _LARGEST_SAFE_INTEGER else None


def _request_id(value: Any) -> str | None:
    """``request_id``: text, or a number as text, cut; ``None`` for empty text and anything else."""
    text: str | None = None
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value) if abs(value) < 10**MAX_REQUEST_ID_LENGTH else None
    elif isinstance(value, float) and math.isfinite(value):
        text = repr(value)
    return _storable(_cut(text, MAX_REQUEST_ID_LENGTH)) if text else None


def _error_message(value: Any) -> str | None:
    """``output.error_message``: text as is, anything else as compact JSON text, cut; ``None`` when empty."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (ValueError, TypeError, RecursionError):
            text = f"<{_kind(value)} too large or too deep to show>"
    return _storable(_cut(text, MAX_ERROR_MESSAGE_LENGTH)) if text else None


def _storable(text: str) -> str:
    """
    ``text`` with each NUL and lone surrogate replaced by U+FFFD.

    A JSON body may hold both (as escapes), but neither can be encoded as UTF-8 or stored in a PostgreSQL
    ``json`` column (a trigger event, an XCom).
    """
    return _UNSTORABLE.sub("\ufffd", text)


_ApiTaskId = Annotated[str, BeforeValidator(_api_task_id)]
_ApiTaskStatus = Annotated[TaskStatus, BeforeValidator(_task_status)]
_ResultUrls = Annotated[list[str], BeforeValidator(_result_urls)]
_UnixTime = Annotated[int | float | None, BeforeValidator(_unix_time)]
_UsageSeconds = Annotated[int | float | None, BeforeValidator(_usage_seconds)]
_RequestId = Annotated[str | None, BeforeValidator(_request_id)]
_ErrorMessage = Annotated[str | None, BeforeValidator(_error_message)]


class _ResponseModel(BaseModel):
    """Base of the response models: fields the API adds later are ignored, never an error."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty dict (response bodies are untrusted)."""
    return value if isinstance(value, dict) else {}


class KlingSubmitResult(_ResponseModel):
    """
    The submit response: ``{"output": {"task_id": ...}, "request_id": ...}``.

    Only ``output.task_id`` can make the answer unusable; ``request_id`` of any JSON type is read as text
    or dropped.

    :param task_id: the new task's id: a valid id (:func:`check_kling_task_id`); a JSON integer is read as
        its decimal text.
    :param request_id: the submit request's id: text, a number as text, or ``None`` (empty, or any other
        JSON type); at most :data:`MAX_REQUEST_ID_LENGTH` characters.
    """

    task_id: _ApiTaskId
    request_id: _RequestId = None

    @classmethod
    def from_api(cls, payload: Any) -> KlingSubmitResult:
        """
        Parse the API's submit response body.

        :param payload: the decoded JSON body, of any type.
        :raises pydantic.ValidationError: the body holds no valid task id (nothing else is raised).
        """
        body = _as_dict(payload)
        output = _as_dict(body.get("output"))
        return cls.model_validate({"task_id": output.get("task_id"), "request_id": body.get("request_id")})


class KlingTask(_ResponseModel):
    """
    A task as the status endpoint reports it.

    Only ``task_id``, ``status`` and ``urls`` can make an answer unusable; every other field of any JSON
    type is coerced or dropped (``None``), so a finished task is always read.

    :param task_id: the API's task id (``output.task_id``): a valid id (:func:`check_kling_task_id`); a JSON
        integer is read as its decimal text.
    :param status: ``output.task_status``; an unknown status is kept, and is not terminal.
    :param urls: the result video URLs (on ``Success``), exactly as sent; temporary, copy them promptly.
        Each is an http(s) URL; a missing or null ``urls`` is ``[]``, anything else is an error.
    :param error_message: the vendor's message (on ``Failure``): text as sent, or anything else as compact
        JSON text; at most :data:`MAX_ERROR_MESSAGE_LENGTH` characters; ``None`` when missing or empty.
    :param submit_time: Unix seconds: an ``int`` when whole, else a ``float``; ``None`` when missing or not a
        finite number in 1970..9999 (numeric text is read).
    :param finish_time: Unix seconds, as ``submit_time``.
    :param usage_seconds: billed video seconds (``usage.duration``): an ``int`` when whole, else a
        ``float``; ``None`` when missing or not a finite non-negative number.
    :param request_id: the status request's id: text, a number as text, or ``None``; at most
        :data:`MAX_REQUEST_ID_LENGTH` characters.
    """

    task_id: _ApiTaskId
    status: _ApiTaskStatus
    urls: _ResultUrls = Field(default_factory=list)
    error_message: _ErrorMessage = None
    submit_time: _UnixTime = None
    finish_time: _UnixTime = None
    usage_seconds: _UsageSeconds = None
    request_id: _RequestId = None

    @classmethod
    def from_api(cls, payload: Any) -> KlingTask:
        """
        Parse the API's status response body (``{"output": {...}, "usage": {...}, "request_id"}``).

        :param payload: the decoded JSON body, of any type.
        :raises pydantic.ValidationError: a load-bearing field (``output.task_id``, ``output.task_status``,
            ``output.urls``) is missing or unusable (nothing else is raised).
        """
        body = _as_dict(payload)
        output = _as_dict(body.get("output"))
        usage = _as_dict(body.get("usage"))
        return cls.model_validate(
            {
                "task_id": output.get("task_id"),
                "status": output.get("task_status"),
                "urls": output.get("urls"),
                "error_message": output.get("error_message"),
                "submit_time": output.get("submit_time"),
                "finish_time": output.get("finish_time"),
                "usage_seconds": usage.get("duration"),
                "request_id": body.get("request_id"),
            }
        )

    def as_result(self) -> dict[str, Any]:
        """
        Return the finished-task dict that operators and sensors push to XCom.

        It holds ids, the status, result URLs and numbers only (``usage_seconds``, ``submit_time`` and
        ``finish_time`` are ``int``, ``float`` or ``None``, always finite): never a secret, never the whole
        response, and always strict JSON.
        """
        return {
            "kling_task_id": self.task_id,
            "status": self.status.value,
            "urls": list(self.urls),
            "usage_seconds": self.usage_seconds,
            "submit_time": self.submit_time,
            "finish_time": self.finish_time,
        }
