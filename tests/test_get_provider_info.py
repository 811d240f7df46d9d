"""The provider's manifest: valid against Airflow's schema, complete, and every module it names imports."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import airflow
import jsonschema
import pytest

from airflow_provider_kling import __version__
from airflow_provider_kling.get_provider_info import get_provider_info
from airflow_provider_kling.hooks._settings import check_max_in_flight, check_max_retries, check_timeout

if TYPE_CHECKING:
    from collections.abc import Callable

AIRFLOW_DIR = Path(airflow.__file__).parent


def _module_names(info: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info.get(section, []):
            names.extend(entry["python-modules"])
    names.extend(entry["python-module"] for entry in info.get("transfers", []))
    return names


def _class_paths(info: dict[str, Any]) -> list[str]:
    paths = [entry["hook-class-name"] for entry in info["connection-types"]]
    paths.extend(info.get("extra-links", []))
    return paths


def test_manifest_matches_airflow_runtime_schema() -> None:
    schema = json.loads((AIRFLOW_DIR / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_manifest_identity() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-kling"
    assert info["versions"] == [__version__]
    assert info["name"]
    assert info["description"]


def test_entry_point_registered() -> None:
    (entry_point,) = [
        ep
        for ep in entry_points(group="apache_airflow_provider")
        if ep.name == "provider_info" and ep.value.startswith("airflow_provider_kling.")
    ]
    assert entry_point.load() is get_provider_info


@pytest.mark.parametrize("module_name", _module_names(get_provider_info()))
def test_every_named_module_imports(module_name: str) -> None:
    importlib.import_module(module_name)


@pytest.mark.parametrize("class_path", _class_paths(get_provider_info()))
def test_every_named_class_imports(class_path: str) -> None:
    module_name, _, class_name = class_path.rpartition(".")
    assert isinstance(getattr(importlib.import_module(module_name), class_name), type)


def test_connection_type_matches_hook() -> None:
    from airflow_provider_kling.hooks.kling import KlingHook

    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == KlingHook.conn_type == "kling"
    assert conn_type["hook-name"] == KlingHook.hook_name == "Kling (ModelVerse)"
    behaviour = conn_type["ui-field-behaviour"]
    assert "password" not in behaviour["hidden-fields"]
    assert "host" not in behaviour["hidden-fields"]
    assert set(conn_type["conn-fields"]) == {"timeout", "max_retries", "max_in_flight"}


@pytest.mark.parametrize(
    ("extra", "check"),
    [("timeout", check_timeout), ("max_retries", check_max_retries), ("max_in_flight", check_max_in_flight)],
)
def test_the_connection_form_offers_exactly_what_the_hook_accepts(
    extra: str, check: Callable[[object, str], float]
) -> None:
    """The form's bounds are the hook's: its maximum passes, one more is refused; the same at the bottom."""
    (conn_type,) = get_provider_info()["connection-types"]
    schema = conn_type["conn-fields"][extra]["schema"]
    top = schema["maximum"]
    assert check(top, extra) == top
    with pytest.raises(ValueError, match=extra):
        check(top + 1, extra)
    if "minimum" in schema:
        assert check(schema["minimum"], extra) == schema["minimum"]
        with pytest.raises(ValueError, match=extra):
            check(schema["minimum"] - 1, extra)
    else:
        assert schema["exclusiveMinimum"] == 0
        assert check(0.1, extra) == 0.1
        with pytest.raises(ValueError, match=extra):
            check(schema["exclusiveMinimum"], extra)


def _airflow_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    airflow_bin = Path(sys.executable).parent / "airflow"
    return subprocess.run(
        [str(airflow_bin), *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_airflow_cli_lists_and_gets_the_provider(tmp_path: Path) -> None:
    listed = _airflow_cli("providers", "list", "--output", "json", tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    packages = {row["package_name"]: row for row in json.loads(listed.stdout)}
    assert packages["airflow-provider-kling"]["version"] == __version__

    got = _airflow_cli(
        "providers", "get", "airflow-provider-kling", "--full", "--output", "json", tmp_path=tmp_path
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert "airflow-provider-kling" in got.stdout
    assert "Kling (ModelVerse)" in got.stdout


def test_airflow_cli_knows_the_connection_type(tmp_path: Path) -> None:
    result = _airflow_cli("providers", "hooks", "--output", "json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    hooks = {row["connection_type"]: row for row in json.loads(result.stdout)}
    assert hooks["kling"]["class"] == "airflow_provider_kling.hooks.kling.KlingHook"
