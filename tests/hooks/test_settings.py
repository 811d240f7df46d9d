from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_kling.constants import DEFAULT_BASE_URL
from airflow_provider_kling.exceptions import KlingConnectionConfigError
from airflow_provider_kling.hooks._settings import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    KlingSettings,
    settings_from_connection,
)

KEY = "sk-SETTINGS-3b8e1f0c9a"


def settings(**fields: Any) -> KlingSettings:
    fields.setdefault("host", "https://api.example.com")
    fields.setdefault("password", KEY)
    return settings_from_connection("kling_x", **fields)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        pytest.param(None, None, DEFAULT_BASE_URL, id="none-default"),
        pytest.param("", None, DEFAULT_BASE_URL, id="empty-default"),
        pytest.param("   ", None, DEFAULT_BASE_URL, id="blank-default"),
        pytest.param("api.modelverse.cn", None, "https://api.modelverse.cn", id="no-scheme-https"),
        pytest.param("https://api.modelverse.cn/", None, "https://api.modelverse.cn", id="trailing-slash"),
        pytest.param("http://127.0.0.1:8089", None, "http://127.0.0.1:8089", id="http-kept"),
        pytest.param("127.0.0.1:8089", None, "https://127.0.0.1:8089", id="port-in-host"),
        pytest.param("127.0.0.1", 8089, "https://127.0.0.1:8089", id="port-field"),
        pytest.param("http://127.0.0.1:8089", 8089, "http://127.0.0.1:8089", id="port-both-agree"),
        pytest.param(
            "https://proxy.example.com/modelverse/",
            None,
            "https://proxy.example.com/modelverse",
            id="path-prefix",
        ),
        pytest.param(
            "https://proxy.example.com/a/b//", None, "https://proxy.example.com/a/b", id="deep-prefix"
        ),
        pytest.param("http://[::1]:8089", None, "http://[::1]:8089", id="ipv6"),
        pytest.param("https://api.modelverse.cn:443", None, "https://api.modelverse.cn", id="default-port"),
        pytest.param("HTTPS://API.modelverse.cn", None, "https://api.modelverse.cn", id="case-normalised"),
    ],
)
def test_base_url(host: str | None, port: int | None, expected: str) -> None:
    assert settings(host=host, port=port).base_url == expected


@pytest.mark.parametrize(
    ("host", "port", "fragment"),
    [
        pytest.param("ftp://files.example.com", None, "scheme must be http or https", id="ftp"),
        pytest.param("https://", None, "no host", id="no-host"),
        pytest.param("https://user:pw@api.example.com", None, "must not carry credentials", id="userinfo"),
        pytest.param("https://api.example.com/?x=1", None, "query string", id="query"),
        pytest.param("https://api.example.com/#frag", None, "query string", id="fragment"),
        pytest.param("127.0.0.1:8089", 9000, "port 8089 but the port field says 9000", id="port-conflict"),
        pytest.param("127.0.0.1", 70000, "port must be from 1 to 65535", id="port-range"),
        pytest.param("http://bad host name", None, "contains whitespace", id="spaces"),
        pytest.param("http://api.example.com:abc", None, "Invalid port", id="bad-port"),
    ],
)
def test_bad_base_url_names_connection(host: str, port: int | None, fragment: str) -> None:
    with pytest.raises(KlingConnectionConfigError, match="kling_x") as info:
        settings(host=host, port=port)
    assert fragment in str(info.value)
    assert KEY not in str(info.value)


@pytest.mark.parametrize("password", [None, "", "   ", "\n"])
def test_missing_api_key_names_connection(password: str | None) -> None:
    with pytest.raises(KlingConnectionConfigError, match=r"'kling_x' has no API key.*password"):
        settings(password=password)


def test_api_key_is_stripped() -> None:
    assert settings(password=f"  {KEY}\n").api_key == KEY


@pytest.mark.parametrize("password", ["sk-with space-123", "sk-tab\tkey", "sk-ünïcode-key", "sk-\x00-null"])
def test_unsendable_api_key_rejected_without_echoing_it(password: str) -> None:
    with pytest.raises(KlingConnectionConfigError, match="cannot be sent in an HTTP header") as info:
        settings(password=password)
    assert password.strip() not in str(info.value)


def test_defaults() -> None:
    resolved = settings()
    assert (resolved.timeout, resolved.max_retries) == (DEFAULT_TIMEOUT, DEFAULT_MAX_RETRIES) == (30.0, 5)


@pytest.mark.parametrize(
    ("extra", "timeout", "max_retries"),
    [
        pytest.param({"timeout": 12.5, "max_retries": 2}, 12.5, 2, id="numbers"),
        pytest.param({"timeout": "7", "max_retries": "3"}, 7.0, 3, id="strings"),
        pytest.param({"timeout": 1, "max_retries": 0}, 1.0, 0, id="zero-retries"),
        pytest.param({"timeout": None, "max_retries": None}, 30.0, 5, id="null-defaults"),
        pytest.param({"timeout": "", "max_retries": ""}, 30.0, 5, id="empty-defaults"),
        pytest.param({"max_retries": 4.0}, 30.0, 4, id="whole-float"),
        pytest.param({"unrelated": "x"}, 30.0, 5, id="other-extras-ignored"),
    ],
)
def test_extras(extra: dict[str, Any], timeout: float, max_retries: int) -> None:
    resolved = settings(extra=extra)
    assert (resolved.timeout, resolved.max_retries) == (timeout, max_retries)


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        pytest.param({"timeout": 0}, "timeout", id="timeout-zero"),
        pytest.param({"timeout": -3}, "timeout", id="timeout-negative"),
        pytest.param({"timeout": 601}, "timeout", id="timeout-too-long"),
        pytest.param({"timeout": "soon"}, "timeout", id="timeout-text"),
        pytest.param({"timeout": True}, "timeout", id="timeout-bool"),
        pytest.param({"timeout": float("nan")}, "timeout", id="timeout-nan"),
        pytest.param({"timeout": [5]}, "timeout", id="timeout-list"),
        pytest.param({"max_retries": -1}, "max_retries", id="retries-negative"),
        pytest.param({"max_retries": 21}, "max_retries", id="retries-too-many"),
        pytest.param({"max_retries": 2.5}, "max_retries", id="retries-fraction"),
        pytest.param({"max_retries": "two"}, "max_retries", id="retries-text"),
        pytest.param({"max_retries": False}, "max_retries", id="retries-bool"),
    ],
)
def test_bad_extras_name_the_extra(extra: dict[str, Any], name: str) -> None:
    with pytest.raises(KlingConnectionConfigError, match=f"'kling_x': extra '{name}' must be"):
        settings(extra=extra)


def test_bad_extra_holding_the_key_does_not_echo_it() -> None:
    with pytest.raises(KlingConnectionConfigError, match="extra 'timeout'") as info:
        settings(extra={"timeout": KEY})
    assert KEY not in str(info.value)


def test_arguments_override_extras() -> None:
    resolved = settings(extra={"timeout": 5, "max_retries": 4}, timeout=9.0, max_retries=1)
    assert (resolved.timeout, resolved.max_retries) == (9.0, 1)


def test_bad_argument_is_named() -> None:
    with pytest.raises(KlingConnectionConfigError, match="the max_retries argument must be"):
        settings(max_retries=-2)


def test_repr_hides_key() -> None:
    resolved = settings()
    assert KEY not in repr(resolved)
    assert KEY not in str(resolved)
    assert "api.example.com" in repr(resolved)


def test_auth_headers_bare_key() -> None:
    assert settings().auth_headers()["Authorization"] == KEY


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://proxy.example.com/mv/v1/tasks/status", True),
        ("https://proxy.example.com/mv", True),
        ("https://proxy.example.com/mvx/results/1.mp4", False),
        ("https://proxy.example.com/results/1.mp4", False),
        ("http://proxy.example.com/mv/results/1.mp4", False),
        ("https://proxy.example.com:8443/mv/results/1.mp4", False),
        ("https://cdn.example.com/mv/results/1.mp4", False),
        ("not a url at all", False),
    ],
)
def test_is_api_url(url: str, expected: bool) -> None:
    assert settings(host="https://proxy.example.com/mv/").is_api_url(url) is expected
