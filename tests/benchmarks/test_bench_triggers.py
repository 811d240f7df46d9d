"""
The trigger benchmark's own pieces (``benchmarks/``): its status server answers as the API does, so that
what the benchmark measures is the provider's real path. Timing is never asserted here.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from airflow_provider_kling.models import KlingTask, TaskStatus

if TYPE_CHECKING:
    from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def server() -> Any:
    bench_server = load("_bench_server")
    app = web.Application()
    app.router.add_get("/v1/tasks/status", bench_server.status)
    app.router.add_get("/anchor/{task_id}", bench_server.anchor)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_task_is_running_until_the_finish_time_its_id_carries(
    server: TestClient[web.Request, web.Application],
) -> None:
    later = int((time.time() + 3600) * 1000)
    answer = await server.get("/v1/tasks/status", params={"task_id": f"b1-{later}"})
    assert KlingTask.from_api(await answer.json()).status is TaskStatus.RUNNING
    answer = await server.get("/v1/tasks/status", params={"task_id": "b2-1000"})
    task = KlingTask.from_api(await answer.json())
    assert (task.task_id, task.status, len(task.urls)) == ("b2-1000", TaskStatus.SUCCESS, 1)


async def test_the_anchor_route_is_404_until_the_finish_time(
    server: TestClient[web.Request, web.Application],
) -> None:
    later = int((time.time() + 3600) * 1000)
    assert (await server.get(f"/anchor/b1-{later}")).status == 404
    assert (await server.get("/anchor/b2-1000")).status == 200


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("anchor", ("anchor", "anchor", 0, None)),
        ("kling", ("kling", "kling", 0, None)),
        ("kling:bound=64", ("kling:bound=64", "kling", 64, None)),
        ("kling@/tmp/before", ("kling (before)", "kling", 0, "/tmp/before")),
    ],
)
def test_contenders(spec: str, parsed: tuple[str, str, int, str | None]) -> None:
    assert load("bench_triggers")._contender(spec) == parsed
