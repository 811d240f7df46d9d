"""The names that differ between Airflow minors: each works where the running Airflow keeps it."""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from airflow_provider_kling import _compat

if TYPE_CHECKING:
    import pytest


async def test_amask_secret_masks_through_airflows_own_coroutine_where_it_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    masked: list[str] = []

    async def airflow_amask_secret(secret: str) -> None:
        masked.append(secret)

    monkeypatch.setattr("airflow.sdk.log.amask_secret", airflow_amask_secret, raising=False)
    await _compat.amask_secret("sk-live-1")
    assert masked == ["sk-live-1"]


async def test_amask_secret_before_airflow_3_3_masks_in_a_worker_thread_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.delattr("airflow.sdk.log.amask_secret", raising=False)  # as on Airflow 3.0-3.2
    monkeypatch.setattr(
        "airflow.providers.common.compat.sdk.mask_secret",
        lambda secret: calls.append((secret, threading.get_ident())),
    )
    await _compat.amask_secret("sk-live-2")
    assert [secret for secret, _ in calls] == ["sk-live-2"]
    assert calls[0][1] != threading.get_ident(), "the synchronous masker ran on the event loop's thread"


def test_the_deferral_exceptions_are_the_ones_the_running_airflow_raises() -> None:
    sdk_exceptions = importlib.import_module("airflow.sdk.exceptions")
    home = (
        sdk_exceptions
        if hasattr(sdk_exceptions, "TaskDeferralError")
        else importlib.import_module("airflow.exceptions")
    )
    assert _compat.TaskDeferralError is home.TaskDeferralError
    assert _compat.TaskDeferralTimeout is home.TaskDeferralTimeout
