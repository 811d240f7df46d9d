"""
Shared fixtures of the provider's test suite.

At import (before any test module imports Airflow) this points Airflow at a throwaway home, so tests never
read or write a developer's real ``~/airflow``:

* ``AIRFLOW_HOME``: a fresh temporary directory, removed at exit (kept if already set in the environment);
* ``AIRFLOW__CORE__LOAD_EXAMPLES=False``: no example DAGs.

``AIRFLOW__CORE__UNIT_TEST_MODE`` is deliberately not set. In Airflow 3.3 it swaps in ``unit_tests.cfg``
(a random Fernet key per process, so processes cannot read each other's encrypted connections) and logs
"Unit test configuration loaded" to stdout in every process that inherits it, which breaks parsing the
output of ``airflow ... -o json`` run by tests. What it would allow, calling an operator's ``execute()``
outside the task runner, already works: ``allow_nested_operators`` defaults to ``True``, so Airflow only
logs a warning.

Fixtures:

* ``kling_simulator``: a running :class:`~airflow_provider_kling.testing.KlingSimulator` (one per test
  session, reset before each test: no tasks, faults or counters leak between tests). Tasks take 0.3 s;
  a test may change ``kling_simulator.task_seconds`` (or any other setting), the reset restores it.
* ``kling_connection``: sets ``AIRFLOW_CONN_KLING_DEFAULT`` to the simulator (host = base URL,
  password = key) for one test, and returns the connection id ``kling_default``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if "AIRFLOW_HOME" not in os.environ:
    _airflow_home = tempfile.mkdtemp(prefix="airflow-provider-kling-tests-")
    os.environ["AIRFLOW_HOME"] = _airflow_home
    atexit.register(shutil.rmtree, _airflow_home, ignore_errors=True)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import json
from typing import TYPE_CHECKING

import pytest

from airflow_provider_kling.constants import CONN_TYPE, DEFAULT_CONN_ID
from airflow_provider_kling.testing import KlingSimulator

if TYPE_CHECKING:
    from collections.abc import Iterator

#: How long a simulated task takes in tests, in seconds: short, but long enough to see Pending/Running.
SIMULATOR_TASK_SECONDS = 0.3


@pytest.fixture(scope="session")
def _kling_simulator_session() -> Iterator[KlingSimulator]:
    with KlingSimulator(task_seconds=SIMULATOR_TASK_SECONDS) as simulator:
        yield simulator


@pytest.fixture
def kling_simulator(_kling_simulator_session: KlingSimulator) -> KlingSimulator:
    """The session's simulator, reset: no tasks, faults, counters, clock offset or setting changes."""
    _kling_simulator_session.reset()
    return _kling_simulator_session


@pytest.fixture
def kling_connection(kling_simulator: KlingSimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the ``kling_default`` connection at the simulator for one test; return its conn id."""
    conn = {"conn_type": CONN_TYPE, "host": kling_simulator.base_url, "password": kling_simulator.api_key}
    monkeypatch.setenv(f"AIRFLOW_CONN_{DEFAULT_CONN_ID.upper()}", json.dumps(conn))
    return DEFAULT_CONN_ID


# ---- s3: the local S3 server (SeaweedFS) and an Airflow "aws" connection to it ---------------------------
# Owned by the transfers/S3 work (issue 5). A real S3-compatible server on 127.0.0.1, one per test session
# (startup takes about 3 to 4 s; see airflow_provider_kling.testing.s3). Tests that use it are marked
# ``integration``.
#
# * ``local_s3``: the running :class:`~airflow_provider_kling.testing.s3.LocalS3Server` (session).
# * ``s3_client``: a boto3 S3 client signed with its credentials.
# * ``s3_bucket``: the name of a bucket that exists on it (shared by the session: write under
#   ``s3_prefix``).
# * ``s3_prefix``: a key prefix unique to the test (``<test name>-<random>/``), so tests never see each
#   other's objects or multipart uploads.
# * ``aws_connection``: sets ``AIRFLOW_CONN_AWS_DEFAULT`` (JSON: login/password = the server's keys,
#   ``extra.endpoint_url`` = the server) for one test and returns the connection id ``aws_default``.

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.testing.s3 import LocalS3Server

#: The bucket the local S3 server is started with.
S3_TEST_BUCKET = "kling-tests"


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3Server]:
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session, with the bucket ``kling-tests``."""
    from airflow_provider_kling.testing.s3 import LocalS3Server

    with LocalS3Server(buckets=[S3_TEST_BUCKET]) as server:
        yield server


@pytest.fixture
def s3_client(local_s3: LocalS3Server) -> Iterator[S3Client]:
    """A boto3 client of the local S3 server (closed after the test)."""
    client = local_s3.client()
    yield client
    client.close()


@pytest.fixture
def s3_bucket(local_s3: LocalS3Server) -> str:
    """The name of the local S3 server's test bucket."""
    return S3_TEST_BUCKET


@pytest.fixture
def s3_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to this test, ending with ``/``."""
    import re
    import uuid

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-")
    return f"{name}-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def aws_connection(local_s3: LocalS3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the ``aws_default`` connection at the local S3 server for one test; return its conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", local_s3.airflow_connection_json())
    return "aws_default"


# ---- end of s3 ---------------------------------------------------------------------------------------------
