"""
The Kling view of the Airflow UI: an Airflow plugin that the provider registers (provider info ``plugins``).

:class:`KlingViewPlugin` mounts a FastAPI app under :data:`URL_PREFIX` on the API server and adds two UI
entries through Airflow 3's ``external_views``: **Kling videos** in the navigation (every Kling task of the
DAGs the user may read, playable, with billed-seconds totals) and a **Kling** tab on the task instance page.
Every endpoint of the app requires an authenticated Airflow user and checks DAG read access through the
auth manager (``airflow_provider_kling.plugins.app``).

The app is built on the first request (:class:`LazyApp`): Airflow imports plugin classes in its other
processes too, and they never serve it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from fastapi import FastAPI

#: Where the app is mounted on the API server.
URL_PREFIX: Final = "/kling"
#: The gallery's address, relative to the API server's root (``make demo`` prints it).
GALLERY_PATH: Final = f"{URL_PREFIX}/"
#: The task instance tab's address; Airflow fills the placeholders.
TASK_INSTANCE_TAB_HREF: Final = (
    f"{URL_PREFIX}/task-instance?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}"
    "&map_index={MAP_INDEX}"
)


class LazyApp:
    """
    An ASGI app that builds the Kling FastAPI app on its first call.

    :param factory: returns the app.
    """

    def __init__(self, factory: Callable[[], FastAPI]) -> None:
        self.factory = factory
        self._app: FastAPI | None = None

    @property
    def app(self) -> FastAPI:
        """The app, built on first use."""
        if self._app is None:
            self._app = self.factory()
        return self._app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        """Serve one ASGI connection."""
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return "airflow_provider_kling.plugins.app:create_app"


def _create_app() -> FastAPI:
    from airflow_provider_kling.plugins.app import create_app

    return create_app()


class KlingViewPlugin(AirflowPlugin):
    """The Kling view: a gallery of every Kling video, its status and billed seconds, in the Airflow UI."""

    name = "kling_view"
    fastapi_apps = [{"app": LazyApp(_create_app), "url_prefix": URL_PREFIX, "name": "Kling view"}]
    external_views = [
        {
            "name": "Kling videos",
            "href": GALLERY_PATH,
            "url_route": "kling-videos",
            "destination": "nav",
            "category": "browse",
        },
        {
            "name": "Kling",
            "href": TASK_INSTANCE_TAB_HREF,
            "url_route": "kling-task-instance",
            "destination": "task_instance",
        },
    ]


__all__ = ["GALLERY_PATH", "URL_PREFIX", "KlingViewPlugin", "LazyApp"]
