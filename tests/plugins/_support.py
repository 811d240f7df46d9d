"""
A metadata database holding Kling records, and users, for the Kling view's tests and its benchmark.

:func:`create_tables` builds Airflow's tables in the configured database (the tests' throwaway SQLite in
``AIRFLOW_HOME``) from the models, without the migrations. :func:`seed` adds DAGs, runs, task instances
and their Kling records (written with Airflow's own ``XComModel.set``, as a worker's XCom push lands).
The auth manager :func:`install_auth_manager` installs is the simple one, except that the user
``restricted`` may read only :data:`READABLE_BY_RESTRICTED`.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_provider_kling.records import landing_record, submit_record, with_outcome

os.environ.setdefault(
    "AIRFLOW__API_AUTH__JWT_SECRET", "kling-view-tests-" + uuid.uuid4().hex + uuid.uuid4().hex
)

READABLE_BY_RESTRICTED = "kling_dag_a"
BUNDLE = "kling-tests-bundle"


def create_tables() -> None:
    """Create Airflow's tables (idempotent)."""
    from airflow import settings
    from airflow.models import import_all_models
    from airflow.models.base import Base

    import_all_models()
    Base.metadata.create_all(settings.engine)


@dataclass
class SeededTask:
    """One seeded Kling task: where its submit record is, and its landing task if any."""

    dag_id: str
    run_id: str
    task_id: str
    kling_task_id: str
    landing_task_id: str | None


def _ensure_dag(session: Any, dag_id: str) -> None:
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel

    if session.get(DagBundleModel, BUNDLE) is None:
        session.add(DagBundleModel(name=BUNDLE))
        session.flush()
    if session.get(DagModel, dag_id) is None:
        session.add(DagModel(dag_id=dag_id, bundle_name=BUNDLE))
        session.flush()


def _ensure_run(session: Any, dag_id: str, run_id: str, run_after: datetime) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    found = session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if found is None:
        session.add(
            DagRun(
                dag_id=dag_id,
                run_id=run_id,
                run_type="manual",
                run_after=run_after,
                state=DagRunState.RUNNING,
            )
        )
        session.flush()


def add_record(
    session: Any,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    record: dict[str, Any],
    run_after: datetime,
    state: str,
) -> None:
    """Add a task instance and its Kling record (``XComModel.set``)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import insert

    from airflow_provider_kling.records import RECORD_XCOM_KEY

    _ensure_dag(session, dag_id)
    _ensure_run(session, dag_id, run_id, run_after)
    session.execute(
        insert(TaskInstance.__table__).values(
            id=uuid.uuid4(),
            dag_id=dag_id,
            task_id=task_id,
            run_id=run_id,
            map_index=-1,
            try_number=1,
            state=state,
            pool="default_pool",
            pool_slots=1,
            queue="default",
            priority_weight=1,
        )
    )
    XComModel.set(RECORD_XCOM_KEY, record, dag_id=dag_id, task_id=task_id, run_id=run_id, session=session)


def seed(
    *,
    count: int,
    dag_ids: tuple[str, ...] = ("kling_dag_a", "kling_dag_b"),
    prompt: str = "a lighthouse at dawn",
    landed_every: int = 2,
    now: datetime | None = None,
    prefix: str = "seed",
    bucket: str = "kling-tests",
    spacing: timedelta = timedelta(hours=1),
) -> list[SeededTask]:
    """
    Add ``count`` finished Kling tasks (every ``landed_every``-th also landed) spread over the DAGs and days.

    :param count: how many Kling tasks.
    :param dag_ids: the DAGs they belong to, in turn.
    :param prompt: their prompt.
    :param landed_every: every n-th task also gets a landing record (0: none).
    :param now: the newest run's date (default: now).
    :param prefix: run id prefix (seed several times with different prefixes).
    :param bucket: the bucket of the landed objects.
    :param spacing: the time between two runs (the newest first).
    """
    from airflow.utils.session import create_session

    newest = now or datetime.now(UTC)
    seeded = []
    with create_session() as session:
        for number in range(count):
            dag_id = dag_ids[number % len(dag_ids)]
            run_id = f"{prefix}_{number:05d}"
            run_after = newest - spacing * number
            kling_task_id = f"task-{prefix}-{number:05d}"
            body = {
                "model": "kling-v3-omni",
                "input": {"prompt": f"{prompt} #{number}"},
                "parameters": {
                    "mode": "std",
                    "aspect_ratio": "16:9",
                    "duration": 5,
                    "external_task_id": run_id,
                },
            }
            finished = run_after.timestamp() + 120
            record = submit_record(
                body=body,
                kling_task_id=kling_task_id,
                kling_conn_id="kling_default",
                now=run_after.timestamp(),
            )
            record = with_outcome(
                record,
                status="Success",
                urls=[f"https://cdn.example.invalid/{kling_task_id}/0.mp4?sig=x"],
                usage_seconds=5,
                finish_time=finished,
                now=finished,
            )
            add_record(
                session,
                dag_id=dag_id,
                run_id=run_id,
                task_id="generate",
                record=record,
                run_after=run_after,
                state="success",
            )
            landing_task_id = None
            if landed_every and number % landed_every == 0:
                landing_task_id = "land"
                landed = landing_record(
                    result={
                        "kling_task_id": kling_task_id,
                        "status": "Success",
                        "urls": record["urls"],
                        "usage_seconds": 5,
                        "finish_time": finished,
                    },
                    s3_uris=[f"s3://{bucket}/kling/{dag_id}/{kling_task_id}/0.mp4"],
                    kling_conn_id="kling_default",
                    aws_conn_id="aws_default",
                    now=finished + 10,
                )
                add_record(
                    session,
                    dag_id=dag_id,
                    run_id=run_id,
                    task_id="land",
                    record=landed,
                    run_after=run_after,
                    state="success",
                )
            seeded.append(SeededTask(dag_id, run_id, "generate", kling_task_id, landing_task_id))
    return seeded


def install_auth_manager() -> Any:
    """Make the simple auth manager, with one DAG only for ``restricted``, the API's auth manager."""
    from airflow.api_fastapi.app import _AuthManagerState

    manager = _one_dag_auth_manager()()
    _AuthManagerState.instance = manager
    return manager


def token_for(username: str, role: str = "viewer") -> str:
    """A JWT of the installed auth manager for ``username``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role)))


def _one_dag_auth_manager() -> type:
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    class _OneDagAuthManager(SimpleAuthManager):
        """The simple auth manager; the user ``restricted`` may read only one DAG."""

        def is_authorized_dag(
            self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
        ) -> bool:
            if user.username == "restricted":
                return details is not None and details.id == READABLE_BY_RESTRICTED
            return bool(
                super().is_authorized_dag(
                    method=method, user=user, access_entity=access_entity, details=details
                )
            )

        def get_authorized_dag_ids(self, *, user: Any, method: Any = "GET", session: Any = None) -> set[str]:
            dag_ids = super().get_authorized_dag_ids(user=user, method=method, session=session)
            if user.username == "restricted":
                return {dag_id for dag_id in dag_ids if dag_id == READABLE_BY_RESTRICTED}
            return set(dag_ids)

    return _OneDagAuthManager
