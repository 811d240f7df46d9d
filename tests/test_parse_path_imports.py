"""
What a DAG file pays at every parse: importing the operators, the sensor and the transfer must not import
the hook, the trigger, the request models or the HTTP machinery (issue 11; benchmarks/bench_imports.py
measures the cost, this test guards the boundary without timing anything).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from _imports import modules_after

#: Modules only a running task, the triggerer or a static request's validation may import.
KEPT_OFF_THE_PARSE_PATH = (
    "airflow_provider_kling.models",
    "airflow_provider_kling.hooks.kling",
    "airflow_provider_kling.hooks._download",
    "airflow_provider_kling.hooks._clients",
    "airflow_provider_kling.hooks._transport",
    "airflow_provider_kling.hooks._answers",
    "airflow_provider_kling.transfers._multipart",
    "airflow_provider_kling.triggers.kling",
    "airflow_provider_kling.media",
    "airflow_provider_kling.s3_inputs",
    "airflow.triggers.base",
)

IMPORT_THE_PUBLIC_MODULES = (
    "import airflow_provider_kling.operators.kling, airflow_provider_kling.sensors.kling, "
    "airflow_provider_kling.transfers.kling_to_s3"
)

BUILD_A_TEMPLATED_DAG = (
    "from airflow.sdk import DAG\n"
    "from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator\n"
    "from airflow_provider_kling.sensors.kling import KlingTaskSensor\n"
    "from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator\n"
    "with DAG('parse_path', schedule=None):\n"
    "    submit = KlingSubmitVideoOperator(\n"
    "        task_id='submit', prompt='{{ params.prompt }}', aspect_ratio='1:1'\n"
    "    )\n"
    "    KlingTaskSensor(task_id='wait', kling_task_id=submit.output)\n"
    "    KlingToS3Operator(task_id='copy', kling_task_id=submit.output, s3_bucket='videos')\n"
)


@pytest.mark.parametrize(
    "code", [IMPORT_THE_PUBLIC_MODULES, BUILD_A_TEMPLATED_DAG], ids=["import", "templated-dag"]
)
def test_parsing_a_dag_file_imports_no_hook_trigger_or_models(code: str) -> None:
    baseline = modules_after("import airflow.sdk")
    added = modules_after(f"import airflow.sdk\n{code}") - baseline
    assert "airflow_provider_kling.operators.kling" in added  # the probe did import the provider
    assert sorted(added & set(KEPT_OFF_THE_PARSE_PATH)) == []


def test_a_static_request_is_still_validated_at_parse_time() -> None:
    """Keeping the models off the import path must not skip the parse-time check of a static request."""
    code = (
        "from airflow.sdk import DAG\n"
        "from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator\n"
        "with DAG('parse_path', schedule=None):\n"
        "    KlingSubmitVideoOperator(task_id='submit', prompt='a fox', aspect_ratio='4:3')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0
    assert "R4 parameters.aspect_ratio" in done.stderr
