from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_kling.constants import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
)
from airflow_provider_kling.exceptions import KlingConnectionConfigError
from airflow_provider_kling.hooks._settings import KlingSettings, settings_from_connection

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
        pytest.param({"max_in_flight": 0}, "max_in_flight", id="in-flight-zero"),
        pytest.param({"max_in_flight": 1001}, "max_in_flight", id="in-flight-too-many"),
        pytest.param({"max_in_flight": 2.5}, "max_in_flight", id="in-flight-fraction"),
        pytest.param({"max_in_flight": "lots"}, "max_in_flight", id="in-flight-text"),
        pytest.param({"max_in_flight": True}, "max_in_flight", id="in-flight-bool"),
    ],
)
def test_bad_extras_name_the_extra(extra: dict[str, Any], name: str) -> None:
    with pytest.raises(KlingConnectionConfigError, match=f"'kling_x': extra '{name}' must be"):
        settings(extra=extra)


@pytest.mark.parametrize(
    ("extra", "bound"),
    [
        pytest.param({}, DEFAULT_MAX_IN_FLIGHT, id="default"),
        pytest.param({"max_in_flight": None}, DEFAULT_MAX_IN_FLIGHT, id="null-default"),
        pytest.param({"max_in_flight": ""}, DEFAULT_MAX_IN_FLIGHT, id="empty-default"),
        pytest.param({"max_in_flight": 1}, 1, id="one"),
        pytest.param({"max_in_flight": "250"}, 250, id="string"),
        pytest.param({"max_in_flight": 1000.0}, 1000, id="whole-float-at-the-limit"),
    ],
)
def test_the_bound_on_requests_in_flight_is_an_extra(extra: dict[str, Any], bound: int) -> None:
    assert settings(extra=extra).max_in_flight == bound


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


# --------------------------------------------------------------------------------------------------
# URI-form connections: the path prefix arrives in the schema field
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param(
            "kling://:KEY-123456@proxy.example.com:8443/modelverse/api",
            "https://proxy.example.com:8443/modelverse/api",
            id="prefix",
        ),
        pytest.param("kling://:KEY-123456@proxy.example.com/mv", "https://proxy.example.com/mv", id="short"),
        pytest.param(
            "kling://:KEY-123456@proxy.example.com:8443/", "https://proxy.example.com:8443", id="none"
        ),
        pytest.param("kling://:KEY-123456@127.0.0.1:8089/http", "http://127.0.0.1:8089", id="http-scheme"),
        pytest.param(
            "kling://:KEY-123456@https%3A%2F%2Fproxy.example.com%2Fmv",
            "https://proxy.example.com/mv",
            id="host",
        ),
    ],
)
def test_uri_connection_keeps_its_path_prefix(uri: str, expected: str) -> None:
    from airflow.models.connection import Connection

    connection = Connection(conn_id="kling_x", uri=uri)
    resolved = settings_from_connection(
        "kling_x",
        host=connection.host,
        password=connection.password,
        port=connection.port,
        schema=connection.schema,
    )
    assert resolved.base_url == expected
    assert resolved.api_key == "KEY-123456"


@pytest.mark.parametrize(
    ("host", "schema", "expected"),
    [
        pytest.param(
            "proxy.example.com", "modelverse/api", "https://proxy.example.com/modelverse/api", id="path"
        ),
        pytest.param("proxy.example.com", "/mv/", "https://proxy.example.com/mv", id="slashes"),
        pytest.param("https://proxy.example.com/mv/", "mv", "https://proxy.example.com/mv", id="both-agree"),
        pytest.param("https://proxy.example.com/", "mv", "https://proxy.example.com/mv", id="host-root"),
        pytest.param("proxy.example.com", "https", "https://proxy.example.com", id="https-scheme"),
        pytest.param("127.0.0.1:8089", "http", "http://127.0.0.1:8089", id="http-scheme"),
        pytest.param("127.0.0.1:8089", " HTTP ", "http://127.0.0.1:8089", id="scheme-case"),
        pytest.param("http://127.0.0.1:8089", "http", "http://127.0.0.1:8089", id="scheme-agrees"),
        pytest.param("https://proxy.example.com/mv", "", "https://proxy.example.com/mv", id="empty"),
        pytest.param("https://proxy.example.com/mv", "/", "https://proxy.example.com/mv", id="slash-only"),
        pytest.param("https://proxy.example.com/mv", None, "https://proxy.example.com/mv", id="none"),
        pytest.param(None, "mv", f"{DEFAULT_BASE_URL}/mv", id="default-host"),
    ],
)
def test_schema_field(host: str | None, schema: str | None, expected: str) -> None:
    assert settings(host=host, schema=schema).base_url == expected


@pytest.mark.parametrize(
    ("host", "schema", "fragments"),
    [
        pytest.param(
            "https://proxy.example.com/a", "b", ["host", "schema", "'/a'", "'/b'"], id="prefixes-differ"
        ),
        pytest.param(
            "https://proxy.example.com", "http", ["host", "schema", "https", "http"], id="schemes-differ"
        ),
        pytest.param("proxy.example.com", "mv?x=1", ["schema", "query string"], id="query"),
        pytest.param("proxy.example.com", "mv#x", ["schema", "query string"], id="fragment"),
        pytest.param("proxy.example.com", "m v", ["schema", "whitespace"], id="whitespace"),
        pytest.param("proxy.example.com", "mv/../other", ["schema", "'.' or '..'"], id="dot-dot"),
        pytest.param("proxy.example.com", "mv/%2e%2e/other", ["schema", "'.' or '..'"], id="encoded-dot-dot"),
        pytest.param("https://proxy.example.com/mv/../x", None, ["host", "'.' or '..'"], id="host-dot-dot"),
        pytest.param("https://proxy.example.com/mv/%2E/x", None, ["host", "'.' or '..'"], id="host-dot"),
        pytest.param("https://proxy.example.com/mv%5C..", None, ["host", "backslashes"], id="host-backslash"),
        pytest.param("proxy.example.com", "mv\\x", ["schema", "backslashes"], id="schema-backslash"),
    ],
)
def test_bad_schema_or_prefix_names_the_fields(host: str, schema: str | None, fragments: list[str]) -> None:
    with pytest.raises(KlingConnectionConfigError, match="'kling_x'") as info:
        settings(host=host, schema=schema)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert KEY not in str(info.value)


# --------------------------------------------------------------------------------------------------
# Ports out of range, wherever they are written
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "field_name"),
    [
        pytest.param("https://api.example.com:0", None, "host", id="host-zero"),
        pytest.param("https://api.example.com:70000", None, "host", id="host-too-big"),
        pytest.param("https://api.example.com:65536", None, "host", id="host-just-too-big"),
        pytest.param("https://api.example.com:-1", None, "host", id="host-negative"),
        pytest.param("api.example.com:0", None, "host", id="no-scheme-zero"),
        pytest.param("api.example.com", 0, "port", id="field-zero"),
        pytest.param("api.example.com", 65536, "port", id="field-too-big"),
        pytest.param("api.example.com", -5, "port", id="field-negative"),
    ],
)
def test_port_out_of_range_is_refused(host: str, port: int | None, field_name: str) -> None:
    with pytest.raises(KlingConnectionConfigError, match="'kling_x'") as info:
        settings(host=host, port=port)
    assert "port must be from 1 to 65535" in str(info.value)
    assert field_name in str(info.value)


@pytest.mark.parametrize(("host", "port"), [("https://api.example.com:65535", None), ("api.example.com", 1)])
def test_port_limits_are_accepted(host: str, port: int | None) -> None:
    assert settings(host=host, port=port).base_url.startswith("https://api.example.com:")


# --------------------------------------------------------------------------------------------------
# No error message shows the host's userinfo or the key
# --------------------------------------------------------------------------------------------------

HOST_SECRET = "HOSTSECRET-7f3a"


@pytest.mark.parametrize(
    "host",
    [
        f"ftp://:{HOST_SECRET}@files.example.com",
        f"ftp://user:{HOST_SECRET}@files.example.com/path?x=1",
        f"https://user:{HOST_SECRET}@api.example.com",
        f"user:{HOST_SECRET}@api.example.com",
        f"http://user:{HOST_SECRET}@bad host",
        f"https://user:{HOST_SECRET}@api.example.com:abc",
        f"https://user:{HOST_SECRET}@api.example.com:70000",
        f"https://user:{HOST_SECRET}@api.example.com/?x=1",
        f"https://user:{HOST_SECRET}/more@api.example.com",
        f"https://:{HOST_SECRET}/more@api.example.com",
        f"https://u:{HOST_SECRET}?x@api.example.com",
        f"https://u:{HOST_SECRET}#x@api.example.com",
        f"https://u:{HOST_SECRET}@",
        f"https://api.example.com/?token={HOST_SECRET}",
        f"ftp://{KEY}.example.com",
        f"ftp://api.example.com/{json.dumps(KEY)[1:-1].replace('-', '%2D')}",
    ],
)
def test_no_message_shows_userinfo_or_key(host: str) -> None:
    with pytest.raises(KlingConnectionConfigError, match="'kling_x'") as info:
        settings(host=host)
    message = str(info.value)
    assert HOST_SECRET not in message
    assert KEY not in message
    assert "3b8e1f0c9a" not in message  # the key's tail: no form of the key (raw, %-encoded) shows


@given(
    scheme=st.sampled_from(["", "http://", "https://", "ftp://", "HTTPS://", "//"]),
    # A user name holding a URL delimiter cannot be told from a host and path; a password can be anything.
    user=st.text(alphabet=string.printable.translate(str.maketrans("", "", "/\\?#@")), max_size=8),
    secret=st.text(alphabet=string.printable, max_size=12),
    rest=st.text(alphabet=string.printable, max_size=30),
    schema=st.one_of(st.none(), st.text(alphabet=string.printable, max_size=12)),
    port=st.one_of(st.none(), st.integers(-2, 70000)),
)
def test_no_message_shows_userinfo_property(
    scheme: str, user: str, secret: str, rest: str, schema: str | None, port: int | None
) -> None:
    host = f"{scheme}{user}:SECRET{secret}@{rest}"
    message = ""
    try:
        settings_from_connection("kling_x", host=host, password=KEY, port=port, schema=schema)
    except KlingConnectionConfigError as error:
        message = str(error)
    assert "SECRET" not in message
    assert KEY not in message


@pytest.mark.parametrize(
    "url",
    [
        "https://proxy.example.com/mv/%2e%2e/other",
        "https://proxy.example.com/mv/%2E%2E/other",
        "https://proxy.example.com/mv/.%2e/other",
        "https://proxy.example.com/mv/x/%2e%2e/%2e%2e/other",
        "https://proxy.example.com/mv%2F..%2Fother",
        "https://proxy.example.com/mv/%2e/x",
        "https://proxy.example.com/mv/..%5Cother",
    ],
)
def test_is_api_url_refuses_dot_segments(url: str) -> None:
    # A server normalises these to a path outside the prefix: the key must not go there.
    assert settings(host="https://proxy.example.com/mv/").is_api_url(url) is False


def test_is_api_url_keeps_dots_inside_segments() -> None:
    assert settings(host="https://proxy.example.com/mv/").is_api_url(
        "https://proxy.example.com/mv/a..b/c.mp4"
    )
