"""Fixtures of the Kling view's tests: Airflow's tables in the tests' SQLite, seeded records, a client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ._support import create_tables, install_auth_manager, seed, token_for

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from ._support import SeededTask


@pytest.fixture(scope="session")
def kling_view_db() -> list[SeededTask]:
    """Airflow's tables, with 30 finished Kling tasks over two DAGs (every other one landed)."""
    create_tables()
    install_auth_manager()
    return seed(count=30, prefix="unit")


@pytest.fixture
def fake_clock() -> list[float]:
    """The app's clock: a mutable Unix time."""
    import time

    return [time.time()]


@pytest.fixture
def client(kling_view_db: list[SeededTask]) -> TestClient:
    """A client of the Kling app, authenticated as an admin-like viewer of every DAG."""
    from fastapi.testclient import TestClient

    from airflow_provider_kling.plugins.app import create_app

    install_auth_manager()
    test_client = TestClient(create_app())
    test_client.headers["Authorization"] = f"Bearer {token_for('viewer_all')}"
    return test_client
