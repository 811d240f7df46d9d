"""
Every provider exception with a ``__reduce__`` survives pickling whole (Airflow ships exceptions between
processes), and every one of those ``__reduce__`` methods is needed: the default pickling would break it.
"""

from __future__ import annotations

import pickle
from typing import Any, cast

import pytest

from airflow_provider_kling import exceptions
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingResultExpiredError,
    KlingS3InputError,
    KlingServerError,
    KlingSubmitUncertainError,
    KlingTaskCreationError,
    KlingTaskFailedError,
    KlingTaskTimeoutError,
    KlingTransportError,
    NeedMoreBytesError,
)

API_ERROR_KWARGS: dict[str, Any] = {
    "status_code": 429,
    "vendor_code": "006001094",
    "request_id": "req-1",
    "body_excerpt": '{"code": "006001094"}',
    "retry_after": 2.5,
}

#: One instance of every exception class that defines or inherits a custom ``__reduce__``, every
#: attribute set to a value other than its default.
CARRIERS_OF_ATTRIBUTES: list[KlingError] = [
    KlingTransportError("connection reset", sent=True),
    KlingTransportError("connection refused", sent=False),
    KlingAPIError("too many requests", **API_ERROR_KWARGS),
    KlingBadRequestError("bad", **API_ERROR_KWARGS),
    KlingAuthError("bad key", **API_ERROR_KWARGS),
    KlingNotFoundError("no such task", **API_ERROR_KWARGS),
    KlingRateLimitError("slow down", **API_ERROR_KWARGS),
    KlingServerError("upstream fault", **API_ERROR_KWARGS),
    KlingTaskCreationError("not accepted", **API_ERROR_KWARGS),
    KlingSubmitUncertainError("The submit timed out.", external_task_id="dag-run-task-t1"),
    KlingSubmitUncertainError("The submit timed out."),
    KlingTaskFailedError("task-1", "content moderation"),
    KlingTaskFailedError("task-1", None),
    KlingTaskTimeoutError("task-1", 90.5, "Running"),
    KlingResultExpiredError("task-1", 403),
    KlingS3InputError(["R18 image_list[0]: too large", "R21 video_list[0]: unreadable"]),
    NeedMoreBytesError(10, 26, "a box header"),
]


def _ids(error: KlingError) -> str:
    return type(error).__name__


def _defines(cls: type, method: str) -> bool:
    """Whether ``cls`` or a base of it in this provider defines ``method`` (builtins aside)."""
    return any(method in vars(klass) for klass in cls.__mro__ if klass.__module__ == exceptions.__name__)


def _exception_classes() -> list[type[BaseException]]:
    return [
        cls for cls in vars(exceptions).values() if isinstance(cls, type) and issubclass(cls, BaseException)
    ]


def test_every_class_with_a_reduce_is_covered() -> None:
    with_reduce = {cls for cls in _exception_classes() if _defines(cls, "__reduce__")}
    assert with_reduce == {type(error) for error in CARRIERS_OF_ATTRIBUTES}


def test_every_class_taking_arguments_has_a_reduce() -> None:
    """A class whose ``__init__`` differs from ``Exception``'s cannot rely on the default pickling."""
    custom_init = {cls for cls in _exception_classes() if _defines(cls, "__init__")}
    assert {cls for cls in custom_init if not _defines(cls, "__reduce__")} == set()


@pytest.mark.parametrize("error", CARRIERS_OF_ATTRIBUTES, ids=_ids)
def test_pickling_keeps_every_attribute_and_the_message(error: KlingError) -> None:
    restored = pickle.loads(pickle.dumps(error))

    assert type(restored) is type(error)
    assert vars(restored) == vars(error)
    assert str(restored) == str(error)
    assert restored.args == error.args


@pytest.mark.parametrize("error", CARRIERS_OF_ATTRIBUTES, ids=_ids)
def test_default_pickling_would_break_it(error: KlingError) -> None:
    """Each ``__reduce__`` is needed: ``BaseException``'s own loses the error or garbles its message."""
    # typeshed types __reduce__ as `str | tuple`; BaseException's always returns a tuple.
    cls, args, *state = cast("tuple[Any, ...]", BaseException.__reduce__(error))
    try:
        restored = cls(*args)
    except TypeError:
        return  # the constructor's arguments are not the message alone: unpickling would raise
    if state:
        restored.__setstate__(state[0])
    assert str(restored) != str(error)
