"""
Fixtures of the scale tests: ONE distributed Airflow for the package (PostgreSQL, CeleryExecutor with a Redis
broker of its own, two Celery workers, two triggerers, scheduler, DAG processor, API server).

The machine's PostgreSQL (127.0.0.1:5432, trust auth, user ``postgres``) gets a fresh database, dropped at
the end; the broker is a ``redis-server`` the harness runs on a free port. Where PostgreSQL does not answer
or there is no ``redis-server``, the tests skip and say why; under CI (``CI=true``) that is a failure.

The Airflow home, with every component's log and every task try's log, is kept after the run under
``test-artifacts/scale/<time>-<pid>/airflow-home`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from airflow_stack import AirflowStack, DistributedTopology, HarnessError, StackSettings  # noqa: E402
from backends import Backends, local_backends  # noqa: E402
from stack_services import missing_distributed_services  # noqa: E402

from airflow_provider_kling.testing import KlingSimulator  # noqa: E402

from .dag_files.kling_scale import AWS_CONN_ID, KLING_CONN_ID, POOL  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Where this session's Airflow home (its logs) stays after the tests (git-ignored); one folder per session,
#: so that two sessions in one checkout never share a home.
ARTIFACTS = REPO_ROOT / "test-artifacts" / "scale" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
SCALE_DAG_FILES = Path(__file__).resolve().parent / "dag_files"
#: How many tasks the simulator admits at once (``006001094`` beyond), and the slots of the ``kling`` pool.
CAPACITY = 5
POOL_SLOTS = 5
#: Simulator seconds a video takes: "until the test moves the clock" (see ``_support.ClockGate``).
HELD_TASK_SECONDS = 600.0
#: The examples' status query interval here.
EXAMPLE_POLL_SECONDS = 1.0
#: Fast reactions to dead processes, so that the faults cost seconds, not minutes (defaults in brackets).
FAST_FAILURE_DETECTION = {
    # A triggerer heartbeats every second [5 s]; its triggers move to another one after 8 s of silence [30].
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
    # A task whose supervisor stopped heartbeating (its worker died) fails after 30 s [300], looked for
    # every 5 s [10].
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # A task queued in a broker that lost it is queued again after 60 s [600], looked for every 10 s [120].
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
}


def require_distributed_services() -> None:
    """Skip (locally) or fail (under ``CI=true``) when PostgreSQL or ``redis-server`` is missing."""
    reason = missing_distributed_services()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the distributed topology's services are missing: {reason}")
    pytest.skip(f"the distributed topology's services are missing: {reason}")


def _bundles() -> str:
    """The examples (the DAGs folder) and this package's DAG files, as two DAG bundles."""
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    return json.dumps(
        [
            {"name": "dags-folder", "classpath": local, "kwargs": {}},
            {"name": "scale-test-dags", "classpath": local, "kwargs": {"path": str(SCALE_DAG_FILES)}},
        ]
    )


@dataclass
class ScaleEnvironment:
    """The distributed Airflow and what it talks to."""

    stack: AirflowStack
    #: The examples' simulator (``kling_default``) and S3 server (``aws_default``), inputs seeded.
    backends: Backends
    #: The scale DAG's simulator (``kling_scale``): admits :data:`CAPACITY` tasks at once.
    simulator: KlingSimulator


@pytest.fixture(scope="package")
def scale_environment() -> Iterator[ScaleEnvironment]:
    """Start the simulators, the S3 server and the distributed Airflow; stop everything at the end."""
    require_distributed_services()
    with (
        local_backends(task_seconds=HELD_TASK_SECONDS) as backends,
        KlingSimulator(task_seconds=HELD_TASK_SECONDS, max_active_tasks=CAPACITY) as simulator,
    ):
        connections = {
            **backends.connections(),
            KLING_CONN_ID: {"conn_type": "kling", "host": simulator.base_url, "password": simulator.api_key},
            AWS_CONN_ID: backends.aws_connection,
        }
        settings = StackSettings(
            home=ARTIFACTS / "airflow-home",
            connections=connections,
            variables=backends.variables,
            pools={POOL: (POOL_SLOTS, True, "Kling video tasks: the account's concurrency")},
            parallelism=6,
            topology=DistributedTopology(celery_workers=2, worker_concurrency=2, triggerers=2),
            extra_env={
                "KLING_EXAMPLE_POLL_SECONDS": f"{EXAMPLE_POLL_SECONDS:g}",
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": _bundles(),
                **FAST_FAILURE_DETECTION,
            },
        )
        stack = AirflowStack(settings, echo=lambda line: print(f"[scale] {line}", flush=True))
        try:
            stack.start(timeout=300.0)
        except HarnessError as error:
            pytest.fail(f"The distributed Airflow did not start: {error}")
        try:
            yield ScaleEnvironment(stack=stack, backends=backends, simulator=simulator)
        finally:
            stack.stop()
