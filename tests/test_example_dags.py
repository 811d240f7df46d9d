"""
The example DAGs: every one imports without errors or warnings, documents itself, and validates.

The ``airflow dags test`` run of every example (against the simulator and a real S3 server) is in
``tests/e2e/test_dags_test.py``; the docs' snippets are checked against the examples in ``test_docs.py``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.operators.kling import REQUEST_FIELDS, KlingSubmitVideoOperator
from airflow_provider_kling.sensors.kling import KlingTaskSensor
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS = REPO_ROOT / "example_dags"
EXPECTED_DAGS = {
    "example_kling_text_to_video": "example_kling_text_to_video.py",
    "example_kling_batch": "example_kling_batch.py",
    "example_kling_image_to_video": "example_kling_image_to_video.py",
    "example_kling_video_edit": "example_kling_video_edit.py",
    "example_kling_multi_shot": "example_kling_multi_shot.py",
    "example_kling_video_catalog": "example_kling_video_catalog.py",
}
#: The pools the examples may use: Airflow's own and the one the docs tell users to create.
KNOWN_POOLS = {"default_pool", "kling"}
MARKER = re.compile(r"^\s*# \[(START|END) (\w+)\]\s*$")


@pytest.fixture(scope="module")
def dagbag() -> tuple[DagBag, list[warnings.WarningMessage]]:
    from airflow.dag_processing.dagbag import DagBag

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(EXAMPLE_DAGS), known_pools=KNOWN_POOLS)
    return bag, list(caught)


def test_every_example_imports_without_errors(dagbag: tuple[DagBag, list[warnings.WarningMessage]]) -> None:
    bag, _ = dagbag

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == set(EXPECTED_DAGS)
    for dag_id, file_name in EXPECTED_DAGS.items():
        assert Path(bag.dags[dag_id].fileloc).name == file_name


def test_every_example_imports_without_warnings(dagbag: tuple[DagBag, list[warnings.WarningMessage]]) -> None:
    bag, caught = dagbag

    assert bag.captured_warnings == {}
    ours = [
        w for w in caught if "example_dags" in str(w.filename) or "airflow_provider_kling" in str(w.filename)
    ]
    assert ours == []
    assert bag.dag_warnings == set(), (
        "every pool an example uses is default_pool or the documented kling pool"
    )


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_every_example_documents_itself(
    dag_id: str, dagbag: tuple[DagBag, list[warnings.WarningMessage]]
) -> None:
    dag = dagbag[0].dags[dag_id]

    assert dag.doc_md, "a Markdown doc_md, shown in the UI"
    assert dag.doc_md.lstrip().startswith("###")
    assert dag.description
    assert {"example", "kling"} <= set(dag.tags)
    assert dag.catchup is False


@pytest.mark.parametrize("file_name", sorted(EXPECTED_DAGS.values()))
def test_every_example_has_balanced_snippet_markers(file_name: str) -> None:
    open_markers: list[str] = []
    seen: list[str] = []
    for line in (EXAMPLE_DAGS / file_name).read_text().splitlines():
        match = MARKER.match(line)
        if not match:
            continue
        kind, name = match.groups()
        if kind == "START":
            assert name not in seen, f"marker {name} used twice"
            open_markers.append(name)
            seen.append(name)
        else:
            assert open_markers[-1:] == [name], f"END {name} without its START"
            open_markers.pop()
    assert seen, "the docs quote every example: it needs at least one [START x]/[END x] pair"
    assert open_markers == []


def test_the_daily_example_uses_the_pool_and_retries(
    dagbag: tuple[DagBag, list[warnings.WarningMessage]],
) -> None:
    dag = dagbag[0].dags["example_kling_text_to_video"]

    assert dag.schedule == "@daily"
    assert {task.pool for task in dag.tasks if not isinstance(task, KlingToS3Operator)} == {"kling"}
    assert all(task.retries == 2 for task in dag.tasks)
    assert [task.task_id for task in dag.topological_sort()] == ["submit", "wait", "land_in_s3"]


def test_the_catalog_is_scheduled_on_the_transfers_asset_alias(
    dagbag: tuple[DagBag, list[warnings.WarningMessage]],
) -> None:
    from airflow.sdk import AssetAlias

    from airflow_provider_kling.transfers.kling_to_s3 import DEFAULT_ASSET_ALIAS

    dag = dagbag[0].dags["example_kling_video_catalog"]

    assert list(dag.timetable.asset_condition.objects) == [AssetAlias(DEFAULT_ASSET_ALIAS)]


class _StubTI:
    """What templates ask of ``ti`` at render time: XComs of upstream tasks."""

    def xcom_pull(self, task_ids: str | None = None, **_kwargs: Any) -> Any:
        if task_ids in ("submit",):
            return "stub-kling-task-id"
        return {"kling_task_id": "stub-kling-task-id", "status": "Success", "urls": []}


def _render(task: Any, dag: Any) -> None:
    from airflow.sdk.execution_time.context import MacrosAccessor

    context = {
        "ds": "2025-06-01",
        "ds_nodash": "20250601",
        "run_id": "scheduled__2025-06-01T00:00:00+00:00",
        "var": {"value": {}, "json": {}},  # every Variable falls back to its default
        "macros": MacrosAccessor(),
        "dag": dag,
        "task": task,
        "ti": _StubTI(),
    }
    task.render_template_fields(context, jinja_env=dag.get_template_env())


def _validated(request: KlingVideoRequest | Exception) -> KlingVideoRequest:
    assert isinstance(request, KlingVideoRequest), f"invalid request: {request}"
    return request


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_every_kling_operator_of_an_example_validates_once_rendered(
    dag_id: str, dagbag: tuple[DagBag, list[warnings.WarningMessage]]
) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = dagbag[0].dags[dag_id]
    checked = 0
    for task in dag.tasks:
        if isinstance(task, MappedOperator) and task.operator_class is KlingSubmitVideoOperator:
            static = {name: value for name, value in task.partial_kwargs.items() if name in REQUEST_FIELDS}
            from backends import EXAMPLE_PROMPTS

            for prompt in EXAMPLE_PROMPTS:  # what the batch example reads from S3
                _validated(KlingVideoRequest.build(prompt=prompt, **static))
            checked += 1
        elif isinstance(task, KlingSubmitVideoOperator):
            _render(task, dag)
            request = _validated(task.build_request())
            assert request.to_api_body()["model"] == "kling-v3-omni"
            checked += 1
        elif isinstance(task, KlingTaskSensor | KlingToS3Operator):
            _render(task, dag)
            assert task.kling_task_id == "stub-kling-task-id"
            if isinstance(task, KlingToS3Operator):
                assert task.s3_bucket == "kling-videos"
                assert "{index}" in task.s3_key
                assert "{{" not in task.s3_key
            checked += 1
    assert checked or dag_id == "example_kling_video_catalog"


@pytest.fixture(autouse=True)
def _scripts_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
