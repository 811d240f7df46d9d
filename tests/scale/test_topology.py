"""
The distributed topology as the harness configures it, checked without starting it (seconds, no services):
what each process is told, the components started, ``make demo DEMO_ARGS=--celery``, the embedded default
left unchanged, and the Celery compatibility shim the locked versions need.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import demo
import pytest
from airflow_stack import COMPONENTS, AirflowStack, DistributedTopology, StackSettings
from backends import Backends
from stack_services import DATABASE_PREFIX, PostgresDatabase, missing_distributed_services

if TYPE_CHECKING:
    from pathlib import Path


def _stack(tmp_path: Path, topology: DistributedTopology | None) -> AirflowStack:
    return AirflowStack(StackSettings(home=tmp_path / "home", topology=topology))


def test_the_distributed_stack_tells_every_process_where_the_database_and_broker_are(tmp_path: Path) -> None:
    stack = _stack(tmp_path, DistributedTopology())
    assert stack.database is not None
    assert stack.broker is not None

    env = stack.env()

    assert stack.database.name.startswith(DATABASE_PREFIX)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://postgres@127.0.0.1:5432/{stack.database.name}"
    )
    assert (
        env["AIRFLOW__CELERY__RESULT_BACKEND"]
        == f"db+postgresql://postgres@127.0.0.1:5432/{stack.database.name}"
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{stack.broker.port}/0"
    assert stack.broker.port != 6379, "never the machine's own Redis"
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "2"


def test_two_workers_and_two_triggerers_without_log_servers(tmp_path: Path) -> None:
    stack = _stack(tmp_path, DistributedTopology(celery_workers=2, worker_concurrency=2, triggerers=2))

    components = dict(stack.components)

    assert list(components) == [
        "scheduler",
        "dag-processor",
        "triggerer-1",
        "triggerer-2",
        "api-server",
        "celery-worker-1",
        "celery-worker-2",
    ]
    for name, args in components.items():
        if name != "dag-processor" and name != "api-server":
            assert "--skip-serve-logs" in args, f"{name} would serve logs on every interface"
    assert components["celery-worker-2"][:4] == ("celery", "worker", "--concurrency", "2")
    assert "worker-2@%h" in components["celery-worker-2"]


def test_the_embedded_default_is_unchanged(tmp_path: Path) -> None:
    stack = _stack(tmp_path, None)

    env = stack.env()

    assert stack.components == COMPONENTS
    assert stack.database is None
    assert stack.broker is None
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env
    assert "AIRFLOW__CELERY__BROKER_URL" not in env


def test_demo_celery_flag_selects_the_distributed_topology(tmp_path: Path) -> None:
    backends = Backends(kling_connection={}, aws_connection={}, bucket="b", s3=None)  # type: ignore[arg-type]

    celery = demo.demo_settings(demo.parse_args(["--celery", "--home", str(tmp_path)]), backends)
    plain = demo.demo_settings(demo.parse_args(["--home", str(tmp_path)]), backends)

    assert celery.topology == DistributedTopology()
    assert plain.topology is None


@pytest.mark.parametrize("name", ["bad-name", "x; DROP DATABASE postgres", "a b"])
def test_database_names_are_plain_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        PostgresDatabase(name=name)


def test_the_locked_celery_provider_imports_on_the_locked_celery() -> None:
    """The Celery provider 3.26 imports `celery.backends.database.retry` (gone in Celery 5.7): pinned."""
    code = (
        "from airflow.providers.celery.executors import celery_executor_utils as u; print(u.retry.__name__)"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "retry", result.stdout


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_missing_services_skip_locally_and_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    from . import conftest

    monkeypatch.setattr(conftest, "missing_distributed_services", lambda: "PostgreSQL does not answer")
    monkeypatch.setenv("CI", ci)

    with pytest.raises(outcome, match="PostgreSQL does not answer"):
        conftest.require_distributed_services()


def test_the_services_check_names_what_is_missing() -> None:
    reason = missing_distributed_services("postgresql://postgres@127.0.0.1:1/postgres")

    assert reason is not None
    assert "PostgreSQL at 127.0.0.1:1 does not answer" in reason
