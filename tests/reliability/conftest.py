"""
Fixtures of the fault matrix: ONE real Airflow for the package, pointed at the session's simulator.

Starting Airflow costs 30 to 60 s on a small machine, so every row that needs real processes shares this
deployment (and one or two DAG runs, see ``test_fault_matrix.py``). Everything binds 127.0.0.1, and every
process it started is stopped when the package is done.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

import pytest
from dags.test_kling_realtime import AIRFLOW, airflow_env

from ._support import DAG_FILES, ReliabilityDeployment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_kling.testing import KlingSimulator

#: A dead triggerer's triggers are taken over once its heartbeat is this old (Airflow's default: 30 s).
TRIGGERER_HEALTH_CHECK_SECONDS = 10


@pytest.fixture(scope="package")
def reliability_airflow(
    _kling_simulator_session: KlingSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReliabilityDeployment]:
    """A migrated, started Airflow whose DAG folder is ``tests/reliability/dag_files``."""
    home = tmp_path_factory.mktemp("reliability-airflow")
    simulator = _kling_simulator_session
    connections = {
        "kling_default": json.dumps(
            {"conn_type": "kling", "host": simulator.base_url, "password": simulator.api_key}
        )
    }
    env = airflow_env(home, connections)
    env.update(
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILES),
            "AIRFLOW__CORE__PARALLELISM": "3",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_CHECK_SECONDS),
        }
    )
    migrated = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    deployment = ReliabilityDeployment(home, env)
    deployment.start()
    try:
        yield deployment
    finally:
        deployment.stop()
