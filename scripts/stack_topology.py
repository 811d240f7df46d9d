"""
What an :class:`airflow_stack.AirflowStack` runs: its settings, and the components of each topology.

:data:`COMPONENTS` is the embedded topology (one scheduler, DAG processor, triggerer and API server, with the
LocalExecutor on SQLite); :class:`DistributedTopology` is the distributed one (PostgreSQL, the
CeleryExecutor with a Redis broker, several Celery workers and triggerers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack_services import DEFAULT_POSTGRES_SERVER_URL

if TYPE_CHECKING:
    from collections.abc import Mapping

    from stack_services import PostgresDatabase, RedisBroker

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS_FOLDER = REPO_ROOT / "example_dags"

#: The components started, in order; the scheduler and triggerer without their all-interfaces log server.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scheduler", ("scheduler", "--skip-serve-logs")),
    ("dag-processor", ("dag-processor",)),
    ("triggerer", ("triggerer", "--skip-serve-logs")),
    ("api-server", ("api-server",)),
)


@dataclass(frozen=True)
class DistributedTopology:
    """
    PostgreSQL, the ``CeleryExecutor`` with a Redis broker, several Celery workers and triggerers.

    :param postgres_server_url: the PostgreSQL server's maintenance database; the stack creates (and drops)
        a fresh database beside it.
    :param celery_workers: how many Celery workers, each its own process (and its own task processes).
    :param worker_concurrency: task slots of each worker (``airflow celery worker --concurrency``).
    :param triggerers: how many triggerers.
    :param redis_server: the ``redis-server`` executable the broker runs from.
    """

    postgres_server_url: str = DEFAULT_POSTGRES_SERVER_URL
    celery_workers: int = 2
    worker_concurrency: int = 2
    triggerers: int = 2
    redis_server: str = "redis-server"

    def components(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The components started, in order, by name; log servers (every interface) are not started."""
        triggerers = tuple(
            (f"triggerer-{number}", ("triggerer", "--skip-serve-logs"))
            for number in range(1, self.triggerers + 1)
        )
        workers = tuple(
            (
                f"celery-worker-{number}",
                (
                    "celery",
                    "worker",
                    "--concurrency",
                    str(self.worker_concurrency),
                    "--celery-hostname",
                    f"worker-{number}@%h",
                    "--skip-serve-logs",
                    "--without-mingle",
                    "--without-gossip",
                ),
            )
            for number in range(1, self.celery_workers + 1)
        )
        return (COMPONENTS[0], COMPONENTS[1], *triggerers, COMPONENTS[3], *workers)

    def env(self, database: PostgresDatabase, broker: RedisBroker) -> dict[str, str]:
        """The settings every Airflow process of this topology gets, on top of the embedded ones.

        :param database: the deployment's metadata database (also Celery's result backend).
        :param broker: the deployment's Celery broker.
        """
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database.sqlalchemy_url,
            "AIRFLOW__CELERY__BROKER_URL": broker.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": database.celery_result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            # One process sends tasks and fetches states (the default, cores - 1, forks a pool per loop).
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            # Celery's own default: a message a dead worker had taken comes back after this many seconds.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
        }


@dataclass
class StackSettings:
    """
    What an :class:`AirflowStack` runs with.

    :param home: the ``AIRFLOW_HOME`` (created; its content belongs to the stack).
    :param dags_folder: the DAGs folder (default: the repository's ``example_dags/``).
    :param connections: Airflow connections by id, as ``AIRFLOW_CONN_<ID>`` JSON objects.
    :param variables: Airflow variables, as ``AIRFLOW_VAR_<NAME>``.
    :param pools: pools created once the API answers: name -> (slots, include_deferred, description).
    :param parallelism: ``[core] parallelism``: the LocalExecutor keeps this many worker processes.
    :param api_port: the API server's port on 127.0.0.1 (default: a free one).
    :param extra_env: more environment variables for every Airflow process.
    :param topology: run distributed (PostgreSQL, Celery and Redis, several workers and triggerers); the
        default ``None`` is the embedded one (SQLite, LocalExecutor, one triggerer).
    """

    home: Path
    dags_folder: Path = EXAMPLE_DAGS_FOLDER
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    pools: Mapping[str, tuple[int, bool, str]] = field(default_factory=dict)
    parallelism: int = 4
    api_port: int | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    topology: DistributedTopology | None = None
