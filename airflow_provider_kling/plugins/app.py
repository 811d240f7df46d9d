"""
The Kling view's FastAPI app, mounted by :class:`~airflow_provider_kling.plugins.kling.KlingViewPlugin`.

Airflow mounts plugin apps without authentication, so this app authenticates every request itself with
Airflow's own dependency (``get_user``: the UI's ``_token`` cookie or a ``Bearer`` token; 401 without one)
and checks DAG read access through the auth manager: the gallery lists only the DAGs
``get_authorized_dag_ids`` returns, and every endpoint about one task instance requires read access to its
DAG's XComs (``requires_access_dag``). Pages are static HTML whose scripts fill them with ``textContent``
only; a strict Content-Security-Policy forbids inline scripts. Presigned URLs never appear in a page: a
``<video>`` points at ``video``, which re-checks access and redirects.

Endpoints (under ``/kling``): ``/`` (gallery page), ``/task-instance`` (the task instance tab),
``/static/<file>``, ``/api/videos`` (cards, paginated, with totals), ``/api/task-instance``,
``/api/live`` (live status of a task in flight) and ``/video`` (redirect to the video).
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final
from urllib.parse import urlsplit

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep  # noqa: TC002 (FastAPI reads it at runtime)
from airflow.api_fastapi.core_api.security import GetUserDep, get_user, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from airflow_provider_kling.constants import RESULT_URL_TTL_HOURS
from airflow_provider_kling.plugins._cards import (
    STATUS_FILTERS,
    RecordRow,
    Selection,
    build_card,
    group_by_task,
    matches_status,
    merge_task,
    select_records,
    totals,
    utc_day,
)
from airflow_provider_kling.plugins._live import LiveStatusCache, query_with_hook
from airflow_provider_kling.plugins._presign import Presigner
from airflow_provider_kling.records import KIND_SUBMIT, TERMINAL_STATUSES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from sqlalchemy.orm import Session

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
#: The files ``/static`` serves, and their types (nothing else is readable).
STATIC_FILES: Final = {
    "kling.css": "text/css",
    "common.js": "text/javascript",
    "gallery.js": "text/javascript",
    "task_instance.js": "text/javascript",
}
PAGES: Final = {"gallery": "gallery.html", "task_instance": "task_instance.html"}
DEFAULT_PAGE_SIZE: Final = 12
MAX_PAGE_SIZE: Final = 100
#: The range the gallery shows when none is given, in days back from today.
DEFAULT_RANGE_DAYS: Final = 30
#: Headers of every answer: no inline script or style, media from anywhere (presigned S3 URLs and result
#: URLs live on other hosts), framed only by the Airflow UI itself, no referrer (paths name DAGs and runs).
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' http: https:; connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


#: Read access to the XComs of the DAG named by the ``dag_id`` query parameter (403 otherwise).
DagXComReadAccess: Final = Depends(requires_access_dag("GET", DagAccessEntity.XCOM))


def readable_dag_ids(user: BaseUser, session: Session) -> set[str]:
    """
    The DAGs ``user`` may read, as the auth manager says.

    :param user: the authenticated user.
    :param session: a metadata database session.
    """
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session))


def _day(value: str | None, name: str) -> Any:
    try:
        return utc_day(value)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{name} must be a date, YYYY-MM-DD") from None


def _ti_records(session: Session, dag_id: str, run_id: str) -> list[RecordRow]:
    rows, _ = select_records(session, Selection(dag_ids=[dag_id], run_id=run_id))
    return rows


def _ti_row(
    rows: list[RecordRow], task_id: str, map_index: int, *, kind: str | None = None
) -> RecordRow | None:
    for row in rows:
        same_instance = row.task_id == task_id and row.map_index == map_index
        if same_instance and (kind is None or row.summary.kind == kind):
            return row
    return None


def _is_web_address(url: object) -> bool:
    """Whether a result URL is an absolute http(s) address, the only kind the view redirects to."""
    parts = urlsplit(str(url))
    return parts.scheme.lower() in {"http", "https"} and bool(parts.netloc)


def _parse_map_index(value: str | None) -> int:
    """Airflow leaves ``{MAP_INDEX}`` unfilled for unmapped tasks: anything but an integer is ``-1``."""
    try:
        return int(value) if value is not None else -1
    except ValueError:
        return -1


def create_app(
    *,
    live_status: LiveStatusCache | None = None,
    presigner: Presigner | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """
    Build the Kling view's app.

    :param live_status: the live status cache (default: queries through ``KlingHook``).
    :param presigner: signs landed videos' URLs (default: ``S3Hook`` clients).
    :param clock: Unix time source.
    """
    live = live_status or LiveStatusCache(query_with_hook)
    signer = presigner or Presigner()
    app = FastAPI(
        title="Kling view",
        dependencies=[Depends(get_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.live_status = live
    app.state.presigner = signer

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    ti_access = DagXComReadAccess

    @app.get("/", include_in_schema=False)
    def gallery_page() -> FileResponse:
        return FileResponse(STATIC_DIR / PAGES["gallery"], media_type="text/html")

    @app.get("/task-instance", include_in_schema=False, dependencies=[ti_access])
    def task_instance_page(dag_id: str) -> FileResponse:
        return FileResponse(STATIC_DIR / PAGES["task_instance"], media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> FileResponse:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return FileResponse(STATIC_DIR / name, media_type=media_type)

    @app.get("/api/videos")
    def videos(
        user: GetUserDep,
        session: SessionDep,
        dag_id: str | None = None,
        task_status: Annotated[str | None, Query(alias="status")] = None,
        since: str | None = None,
        until: str | None = None,
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
        per_page: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    ) -> JSONResponse:
        now = clock()
        readable = readable_dag_ids(user, session)
        if dag_id and dag_id not in readable:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "You may not read this DAG")
        if task_status and task_status not in STATUS_FILTERS:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, f"status must be one of {', '.join(STATUS_FILTERS)}"
            )
        first, end = _day(since, "since"), _day(until, "until")
        if first is None and end is None:
            first = _day(time.strftime("%Y-%m-%d", time.gmtime(now - DEFAULT_RANGE_DAYS * 86400)), "since")
        if end is not None:
            end += timedelta(days=1)  # the "until" day is included
        rows, cut = select_records(
            session, Selection(dag_ids=[dag_id] if dag_id else readable, since=first, until=end)
        )
        tasks = [merge_task(task) for task in group_by_task(rows)]
        tasks = [task for task in tasks if matches_status(task, task_status)]
        pages = max(1, math.ceil(len(tasks) / per_page))
        shown = [build_card(task, now) for task in tasks[(page - 1) * per_page : page * per_page]]
        return JSONResponse(
            {
                "now": now,
                "cards": shown,
                "total": len(tasks),
                "page": page,
                "pages": pages,
                "per_page": per_page,
                "truncated": cut,
                "totals": totals(tasks),
                "dags": sorted(readable),
                "statuses": list(STATUS_FILTERS),
                "since": first.date().isoformat() if first else None,
                "until": (end - timedelta(days=1)).date().isoformat() if end else None,
            }
        )

    @app.get("/api/task-instance", dependencies=[ti_access])
    def task_instance(
        session: SessionDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str | None = None,
    ) -> JSONResponse:
        now = clock()
        rows = _ti_records(session, dag_id, run_id)
        own = _ti_row(rows, task_id, _parse_map_index(map_index))
        cards = []
        if own is not None:
            same_task = [row for row in rows if row.summary.kling_task_id == own.summary.kling_task_id]
            cards = [build_card(merge_task(task), now) for task in group_by_task(same_task)]
        return JSONResponse({"now": now, "cards": cards, "is_kling_task": own is not None})

    @app.get("/api/live", dependencies=[ti_access])
    def live_status_of_task(
        session: SessionDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str | None = None,
    ) -> JSONResponse:
        row = _ti_row(
            _ti_records(session, dag_id, run_id), task_id, _parse_map_index(map_index), kind=KIND_SUBMIT
        )
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "This task instance has no Kling record")
        record = row.record
        recorded = record.get("status")
        if recorded in TERMINAL_STATUSES or not record.get("kling_conn_id"):
            answer = {"status": recorded, "status_since": record.get("status_since"), "checked_at": None}
        else:
            answer = live.get(
                str(record["kling_conn_id"]),
                str(record["kling_task_id"]),
                known_status=recorded,
                known_since=record.get("status_since"),
            ).as_dict()
        return JSONResponse({"now": clock(), "kling_task_id": record["kling_task_id"], "live": answer})

    @app.get("/video", dependencies=[ti_access])
    def video(
        session: SessionDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str | None = None,
        index: Annotated[int, Query(ge=0, le=100)] = 0,
    ) -> Response:
        row = _ti_row(_ti_records(session, dag_id, run_id), task_id, _parse_map_index(map_index))
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "This task instance has no Kling record")
        record = row.record
        landed = list(record.get("s3_uris") or [])
        urls = list(record.get("urls") or [])
        if index < len(landed):
            return RedirectResponse(
                signer.url(str(landed[index]), record.get("aws_conn_id")), status_code=307
            )
        finished_at = record.get("finished_at")
        valid = (
            not isinstance(finished_at, int | float) or clock() < finished_at + RESULT_URL_TTL_HOURS * 3600
        )
        if index < len(urls) and not _is_web_address(urls[index]):
            # The API wrote this URL: a javascript:, data: or file: one never becomes our redirect.
            raise HTTPException(status.HTTP_404_NOT_FOUND, "The result URL is not an http(s) address")
        if index < len(urls) and valid:
            return RedirectResponse(str(urls[index]), status_code=307)
        if index < len(urls):
            raise HTTPException(
                status.HTTP_410_GONE, "The result URL has expired and the video was not landed"
            )
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such video")

    return app
