"""
The status server of ``bench_triggers.py``: an aiohttp process that answers status queries, nothing else.

A task id carries its own finish time (``b<n>-<unix milliseconds>``), so the server keeps no task state:

* ``GET /v1/tasks/status?task_id=...``: the Kling status answer, ``Running`` before the finish time and
  ``Success`` (one result URL) after it, for ``KlingTaskTrigger``;
* ``GET /anchor/<task_id>``: 404 before the finish time, 200 after it, for the http provider's
  ``HttpSensorTrigger`` (which fires on the first non-404);
* ``GET /_bench/control?latency=<seconds>``: every later answer waits that long first; resets the counters;
* ``GET /_bench/stats``: requests per route, connections opened, peak requests in flight.

Run: ``python benchmarks/_bench_server.py`` prints its base URL on the first line of stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import weakref

from aiohttp import web

_state = {"latency": 0.0, "status": 0, "anchor": 0, "connections": 0, "in_flight": 0, "peak_in_flight": 0}
_seen: weakref.WeakSet[object] = weakref.WeakSet()


def _finish_time(task_id: str) -> float:
    return int(task_id.rpartition("-")[2]) / 1000


async def _answered(request: web.Request) -> None:
    transport = request.transport
    if transport not in _seen:
        _seen.add(transport)
        _state["connections"] += 1
    _state["in_flight"] += 1
    _state["peak_in_flight"] = max(_state["peak_in_flight"], _state["in_flight"])
    try:
        if _state["latency"]:
            await asyncio.sleep(_state["latency"])
    finally:
        _state["in_flight"] -= 1


async def status(request: web.Request) -> web.Response:
    _state["status"] += 1
    await _answered(request)
    task_id = request.query["task_id"]
    output: dict[str, object] = {"task_id": task_id, "task_status": "Running", "submit_time": 1767000000}
    if time.time() >= _finish_time(task_id):
        output.update(
            task_status="Success", urls=[f"https://cdn.bench/{task_id}.mp4"], finish_time=1767000100
        )
    body = {"output": output, "usage": {"duration": 5}, "request_id": "req-bench"}
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


async def anchor(request: web.Request) -> web.Response:
    _state["anchor"] += 1
    await _answered(request)
    if time.time() >= _finish_time(request.match_info["task_id"]):
        return web.json_response({"done": True})
    return web.json_response({"done": False}, status=404)


async def control(request: web.Request) -> web.Response:
    _state.update(status=0, anchor=0, connections=0, peak_in_flight=0)
    if "latency" in request.query:
        _state["latency"] = float(request.query["latency"])
    return web.json_response(_state)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(_state)


async def main() -> None:
    app = web.Application()
    app.router.add_get("/v1/tasks/status", status)
    app.router.add_get("/anchor/{task_id}", anchor)
    app.router.add_get("/_bench/control", control)
    app.router.add_get("/_bench/stats", stats)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop  # the server's own CPU is not measured; the less of it, the less it disturbs

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
