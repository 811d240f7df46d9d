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
    import gc

    from airflow.dag_processing.dagbag import DagBag

    # Collect what earlier tests left behind first, so that their ResourceWarnings are not captured here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()
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

    # mypy cannot read Airflow's ScheduleInterval alias (`None | str | ...`), so it drops str from `schedule`.
    assert dag.schedule == "@daily"  # type: ignore[comparison-overlap]
    assert {task.pool for task in dag.tasks if not isinstance(task, KlingToS3Operator)} == {"kling"}
    assert all(task.retries == 2 for task in dag.tasks)
    assert [task.task_id for task in dag.topological_sort()] == ["submit", "wait", "land_in_s3"]


def test_the_catalog_is_scheduled_on_the_transfers_asset_alias(
    dagbag: tuple[DagBag, list[warnings.WarningMessage]],
) -> None:
    from airflow.sdk import AssetAlias
    from airflow.sdk.definitions.asset import AssetBooleanCondition

    from airflow_provider_kling.transfers.kling_to_s3 import DEFAULT_ASSET_ALIAS

    dag = dagbag[0].dags["example_kling_video_catalog"]

    condition = dag.timetable.asset_condition
    assert isinstance(condition, AssetBooleanCondition)
    assert list(condition.objects) == [AssetAlias(DEFAULT_ASSET_ALIAS)]


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


# --- The docs' snippets ----------------------------------------------------------------------------------
# Every code block of docs/*.md is quoted from a file a test runs: the example DAGs (run under
# `airflow dags test` in tests/e2e/test_dags_test.py) or the snippets below (run here).


def test_every_doc_snippet_is_quoted_from_a_file_a_test_runs() -> None:
    from doc_snippets import documents, render, snippets

    quoted = [snippet for doc in documents() for snippet in snippets(doc)]

    assert len(quoted) >= 10
    for snippet in quoted:
        assert snippet.source.startswith("example_dags/") or snippet.source == "tests/test_example_dags.py"
    stale = [doc.name for doc in documents() if render(doc) != doc.read_text()]
    assert stale == [], "run `.venv/bin/python scripts/doc_snippets.py` to refresh the docs' snippets"


def test_the_pool_command_the_docs_give_is_the_one_the_e2e_tests_run() -> None:
    import shlex

    from backends import KLING_POOL_CLI
    from doc_snippets import documents

    texts = [path.read_text() for path in [*documents(), *EXAMPLE_DAGS.glob("*.py")]]
    lines = [line.strip() for text in texts for line in text.splitlines()]
    commands = [line for line in lines if line.startswith("airflow pools set")]

    assert commands, "the docs tell users how to create the pool"
    assert {tuple(shlex.split(command)) for command in commands} == {("airflow", *KLING_POOL_CLI)}


def test_doc_snippet_check_reports_a_stale_block(tmp_path: Path) -> None:
    from doc_snippets import render

    (tmp_path / "src.py").write_text("x = 1\n# [START demo]\ny = 2\n# [END demo]\n")
    doc = tmp_path / "doc.md"
    doc.write_text("Text\n<!-- snippet: src.py#demo -->\n```python\ny = 3\n```\nMore\n")

    assert render(doc, root=tmp_path) == "Text\n<!-- snippet: src.py#demo -->\n```python\ny = 2\n```\nMore\n"


def test_docs_hook_snippet_runs_against_the_simulator(
    kling_connection: str, kling_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_kling.testing.simulator import result_video

    monkeypatch.chdir(tmp_path)
    kling_simulator.task_seconds = 0

    # [START howto_hook_kling]
    from airflow_provider_kling.exceptions import KlingTaskFailedError
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingVideoRequest, TaskStatus

    hook = KlingHook(kling_conn_id="kling_default")
    request = KlingVideoRequest.build(
        prompt="A paper boat on a rainy street", aspect_ratio="16:9", duration=5
    )
    kling_task_id = hook.submit_task(request)  # checked against R1..R22 first; every submit is billed
    task = hook.wait_for_task(kling_task_id, poll_interval=10, timeout=900)  # returns a failed task too
    if task.status != TaskStatus.SUCCESS:
        raise KlingTaskFailedError(task.task_id, task.error_message)
    with (
        hook.stream_result(task.urls[0], kling_task_id=task.task_id) as video,
        open("video.mp4", "wb") as out,
    ):
        for chunk in video:  # bounded, resumed with Range, proven whole; result URLs expire: copy promptly
            out.write(chunk)
    # [END howto_hook_kling]

    assert (tmp_path / "video.mp4").read_bytes() == result_video("16:9")
    assert len(kling_simulator.submitted) == 1


# [START howto_trigger_kling]
from airflow.sdk import BaseOperator  # noqa: E402

from airflow_provider_kling.exceptions import KlingTaskFailedError  # noqa: E402
from airflow_provider_kling.triggers.kling import KlingTaskTrigger  # noqa: E402


class PublishKlingVideoOperator(BaseOperator):
    """Wait in the triggerer for a Kling task submitted outside Airflow (by a web app, say); return URLs."""

    template_fields = ("kling_task_id",)

    def __init__(self, *, kling_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kling_task_id = kling_task_id

    def execute(self, context: Any) -> None:
        trigger = KlingTaskTrigger(
            kling_task_id=self.kling_task_id, kling_conn_id="kling_default", poll_interval=30, timeout=3600
        )
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[str]:
        if event["status"] == "failure":  # the task ran and failed: the vendor's message
            raise KlingTaskFailedError(event["kling_task_id"], event["message"])
        if event["status"] == "error":  # "timeout" or "api_error"
            raise RuntimeError(f"Kling task {event['kling_task_id']}: {event['reason']}: {event['message']}")
        return list(event["urls"])


# [END howto_trigger_kling]


async def test_docs_trigger_snippet_defers_and_completes_against_the_simulator(
    kling_connection: str, kling_simulator: Any
) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingVideoRequest

    kling_simulator.task_seconds = 0
    kling_task_id = KlingHook().submit_task(KlingVideoRequest.build(prompt="A kite", aspect_ratio="1:1"))
    operator = PublishKlingVideoOperator(task_id="publish", kling_task_id=kling_task_id)

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    trigger = deferred.value.trigger
    classpath, kwargs = trigger.serialize()
    event = None
    async for fired in KlingTaskTrigger(**kwargs).run():
        event = fired.payload
        break

    assert classpath == "airflow_provider_kling.triggers.kling.KlingTaskTrigger"
    assert event is not None
    assert operator.execute_complete(context={}, event=event) == [
        f"{kling_simulator.base_url}/results/{kling_task_id}/1.mp4"
    ]
    failed = {"status": "failure", "kling_task_id": kling_task_id, "message": "moderation"}
    with pytest.raises(KlingTaskFailedError, match="moderation"):
        operator.execute_complete(context={}, event=failed)
