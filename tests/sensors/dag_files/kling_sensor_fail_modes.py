"""
Test-only DAG: ``soft_fail``, ``never_fail`` and ``silent_fail`` of ``KlingTaskSensor``, deferrable vs poke.

Run by ``tests/sensors/test_fail_modes_dag.py`` with ``airflow dags test`` against the simulator (issue 10,
item 5). For each flag (none, ``soft_fail``, ``never_fail``, ``silent_fail``) it waits, in poke mode and
deferrable, for:

* ``failed``: a Kling task that had already failed (the deferrable sensor sees it on its first poke);
* ``fails_later``: (deferrable only) a task submitted right before the sensor that fails 2 s later, while
  the sensor waits in the trigger (so ``execute_complete`` gets the ``failure`` event); its poke-mode
  reference is the ``failed`` poke sensor, since poking cannot tell the two apart;
* ``slow``: a task that outlives the sensor's 1 s ``timeout``.

The run conf holds the ids of ``failed`` and ``slow`` (created by the test). Every task is one link of a
single chain with ``trigger_rule="all_done"``, so ``airflow dags test`` runs them in a fixed order and
each ``fails_later`` sensor starts right after its own submit. One immediate retry tells a failure
that Airflow retries from one it does not (a sensor timeout).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, chain

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.sensors.kling import KlingTaskSensor

FLAGS: dict[str, dict[str, Any]] = {
    "no_flag": {},
    "soft_fail": {"soft_fail": True},
    "never_fail": {"never_fail": True},
    "silent_fail": {"silent_fail": True},
}
WAIT: dict[str, Any] = {"poke_interval": 0.3, "timeout": 1}

with DAG(
    dag_id="kling_sensor_fail_modes",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(0), "trigger_rule": "all_done"},
    tags=["kling", "test"],
) as dag:
    tasks: list[Any] = []
    for flag, flags in FLAGS.items():
        for situation in ("failed", "slow"):
            for mode, deferrable in (("poke", False), ("deferrable", True)):
                tasks.append(
                    KlingTaskSensor(
                        task_id=f"{situation}__{flag}__{mode}",
                        kling_task_id=f"{{{{ dag_run.conf['{situation}'] }}}}",
                        deferrable=deferrable,
                        **WAIT,
                        **flags,
                    )
                )
        submit = KlingSubmitVideoOperator(
            task_id=f"submit_fails_later__{flag}", prompt=f"fails later: {flag}", aspect_ratio="16:9"
        )
        tasks += [
            submit,
            KlingTaskSensor(
                task_id=f"fails_later__{flag}__deferrable",
                kling_task_id=f"{{{{ ti.xcom_pull('{submit.task_id}') }}}}",
                poke_interval=0.3,
                timeout=20,  # the task fails after 2 s, well within
                **flags,
            ),
        ]
    chain(*tasks)
