"""The plugin the provider registers: found through provider info, valid, with its UI entries and app."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow_provider_kling.get_provider_info import get_provider_info
from airflow_provider_kling.plugins.kling import GALLERY_PATH, URL_PREFIX, KlingViewPlugin, LazyApp


def test_provider_info_registers_the_plugin_and_airflow_loads_it() -> None:
    from airflow._shared.module_loading import import_string
    from airflow._shared.plugins_manager import is_valid_plugin
    from airflow.plugins_manager import _load_providers_plugins

    (entry,) = get_provider_info()["plugins"]
    plugin_class = import_string(entry["plugin-class"])
    assert plugin_class is KlingViewPlugin
    assert is_valid_plugin(plugin_class)
    plugins, errors = _load_providers_plugins()
    # Airflow annotates the list as plugin instances; it holds the classes that is_valid_plugin accepts.
    assert KlingViewPlugin in plugins  # type: ignore[comparison-overlap]
    assert not errors


def test_ui_entries_and_app() -> None:
    nav, tab = KlingViewPlugin.external_views
    assert (nav["name"], nav["href"], nav["destination"]) == ("Kling videos", GALLERY_PATH, "nav")
    assert tab["destination"] == "task_instance"
    for placeholder in ("{DAG_ID}", "{RUN_ID}", "{TASK_ID}", "{MAP_INDEX}"):
        assert placeholder in tab["href"]
    (app,) = KlingViewPlugin.fastapi_apps
    assert app["url_prefix"] == URL_PREFIX
    assert tab["href"].startswith(URL_PREFIX)
    assert nav["href"].startswith(URL_PREFIX)


def test_the_app_is_built_on_its_first_request_only() -> None:
    built: list[Any] = []
    sent: list[Any] = []

    def factory() -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 204, "headers": []})

        built.append(app)
        return app

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    lazy = LazyApp(factory)
    assert built == []
    for _ in range(2):
        asyncio.run(lazy({"type": "http"}, receive, send))
    assert len(built) == 1
    assert [message["status"] for message in sent] == [204, 204]
