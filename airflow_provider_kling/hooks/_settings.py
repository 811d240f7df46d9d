"""
Airflow connection -> the settings :class:`~airflow_provider_kling.hooks.kling.KlingHook` runs with.

One pure function, :func:`settings_from_connection`, so that every parsing rule is tested on its own,
without Airflow, a secrets backend or a network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

import httpx

from airflow_provider_kling import __version__
from airflow_provider_kling.constants import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_IN_FLIGHT_LIMIT,
    MAX_RETRIES_LIMIT,
    MAX_TIMEOUT,
)
from airflow_provider_kling.exceptions import KlingConnectionConfigError
from airflow_provider_kling.hooks._redact import redact, redact_url

if TYPE_CHECKING:
    from collections.abc import Mapping

#: ``User-Agent`` of every request.
USER_AGENT: Final = f"airflow-provider-kling/{__version__}"

_ALLOWED_SCHEMES: Final = frozenset({"http", "https"})


@dataclass(frozen=True, slots=True)
class KlingSettings:
    """
    What the hook needs from its connection, resolved and validated once.

    The API key is left out of ``repr`` so that the settings can be logged or shown in a traceback.

    :param conn_id: the Airflow connection id the settings came from.
    :param base_url: the API base URL: scheme, host, optional port and path prefix, no trailing slash.
    :param api_key: the ModelVerse API key, sent bare in the ``Authorization`` header.
    :param timeout: timeout of one HTTP request, in seconds.
    :param max_retries: how many times a failed request is retried (a submit only where safe).
    :param max_in_flight: async requests of this connection in flight at once on one event loop.
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    timeout: float
    max_retries: int
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    def url(self, path: str) -> str:
        """Return the absolute URL of an API path such as ``/v1/tasks/status``."""
        return self.base_url + path

    def auth_headers(self) -> dict[str, str]:
        """Return the headers of an authenticated API request: the bare key, no ``Bearer`` prefix."""
        return {"Authorization": self.api_key, "Accept": "application/json"}

    def is_api_url(self, url: str) -> bool:
        """
        Whether ``url`` points under the API base URL (same scheme, host, port and path prefix).

        Only such URLs may receive the API key; result URLs on other hosts are presigned and get none.
        A path with a ``.`` or ``..`` segment or a backslash (also percent-encoded: ``%2e%2e``, ``%5C``) is
        never under the prefix: a server resolves it to a path that may lie outside.

        :param url: an absolute URL.
        """
        try:
            target = httpx.URL(url)
            base = httpx.URL(self.base_url)
        except httpx.InvalidURL:
            return False
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            return False
        if _has_dot_segment(target.path):
            return False  # a server resolves these to a path that may be outside the prefix
        prefix = base.path.rstrip("/")
        return target.path == prefix or target.path.startswith(prefix + "/")


def settings_from_connection(
    conn_id: str,
    *,
    host: str | None,
    password: str | None,
    port: int | None = None,
    extra: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    schema: str | None = None,
) -> KlingSettings:
    """
    Turn an Airflow connection's fields into :class:`KlingSettings`.

    - password: the API key (required; surrounding whitespace is dropped);
    - host: the base URL: empty means :data:`~airflow_provider_kling.constants.DEFAULT_BASE_URL`, no scheme
      means ``https://``, ``http://`` is kept as given, a trailing slash is dropped, a path prefix (a
      proxy) is kept, a port (1 to 65535) may be in the host or in the connection's port field;
    - schema: the path prefix when the host has none. A connection given as a URI
      (``kling://:KEY@proxy.example.com:8443/modelverse/api``) arrives so: Airflow puts the URI's path in
      the schema field. ``http`` or ``https`` there is the scheme instead (the HTTP provider's
      convention), used when the host names none;
    - extras ``timeout`` (seconds, default 30), ``max_retries`` (default 5) and ``max_in_flight`` (async
      requests in flight at once per event loop, default :data:`DEFAULT_MAX_IN_FLIGHT`).

    No error message contains the API key (in any form) or the userinfo, query string or fragment of
    the host.

    :param conn_id: the connection id, used in error messages.
    :param host: the connection's host field.
    :param password: the connection's password field: the API key.
    :param port: the connection's port field.
    :param extra: the connection's extras, already deserialized.
    :param timeout: overrides the ``timeout`` extra (the hook's constructor argument).
    :param max_retries: overrides the ``max_retries`` extra (the hook's constructor argument).
    :param schema: the connection's schema field: a path prefix, or the scheme ``http``/``https``.
    :raises KlingConnectionConfigError: the connection cannot be used; the message names the connection
        and the field, and never contains the API key.
    """
    api_key = _api_key(conn_id, password)
    extra = extra or {}
    timeout_value, timeout_source = (
        (timeout, "the timeout argument")
        if timeout is not None
        else (extra.get("timeout"), "extra 'timeout'")
    )
    retries_value, retries_source = (
        (max_retries, "the max_retries argument")
        if max_retries is not None
        else (extra.get("max_retries"), "extra 'max_retries'")
    )
    try:
        resolved_timeout = (
            DEFAULT_TIMEOUT if _unset(timeout_value) else check_timeout(timeout_value, timeout_source)
        )
        resolved_retries = (
            DEFAULT_MAX_RETRIES if _unset(retries_value) else check_max_retries(retries_value, retries_source)
        )
        in_flight_value = extra.get("max_in_flight")
        resolved_in_flight = (
            DEFAULT_MAX_IN_FLIGHT
            if _unset(in_flight_value)
            else check_max_in_flight(in_flight_value, "extra 'max_in_flight'")
        )
    except ValueError as error:
        raise KlingConnectionConfigError(
            f"Kling connection {conn_id!r}: {redact(str(error), api_key)}"
        ) from None
    return KlingSettings(
        conn_id=conn_id,
        base_url=_base_url(conn_id, host, port, schema, api_key),
        api_key=api_key,
        timeout=resolved_timeout,
        max_retries=resolved_retries,
        max_in_flight=resolved_in_flight,
    )


def check_timeout(value: object, what: str) -> float:
    """
    Validate a timeout in seconds: a finite number above 0 and at most :data:`MAX_TIMEOUT`.

    Numeric strings are accepted (connection extras may hold strings).

    :param value: the value to check.
    :param what: how to name the value in the error message.
    :raises ValueError: the value is not a valid timeout.
    """
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not 0 < number <= MAX_TIMEOUT:
        raise ValueError(
            f"{what} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, got {_show(value)}"
        )
    return number


def check_max_retries(value: object, what: str) -> int:
    """
    Validate a retry count: a whole number from 0 to :data:`MAX_RETRIES_LIMIT`.

    Strings of digits are accepted (connection extras may hold strings).

    :param value: the value to check.
    :param what: how to name the value in the error message.
    :raises ValueError: the value is not a valid retry count.
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not 0 <= number <= MAX_RETRIES_LIMIT:
        raise ValueError(f"{what} must be a whole number from 0 to {MAX_RETRIES_LIMIT}, got {_show(value)}")
    return number


def check_max_in_flight(value: object, what: str) -> int:
    """
    Validate a bound on requests in flight: a whole number from 1 to :data:`MAX_IN_FLIGHT_LIMIT`.

    Strings of digits are accepted (connection extras may hold strings).

    :param value: the value to check.
    :param what: how to name the value in the error message.
    :raises ValueError: the value is not a valid bound.
    """
    number = _whole_number(value)
    if number is None or not 1 <= number <= MAX_IN_FLIGHT_LIMIT:
        raise ValueError(f"{what} must be a whole number from 1 to {MAX_IN_FLIGHT_LIMIT}, got {_show(value)}")
    return number


def _whole_number(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _unset(value: object) -> bool:
    return value is None or value == ""


def _api_key(conn_id: str, password: str | None) -> str:
    key = (password or "").strip()
    if not key:
        raise KlingConnectionConfigError(
            f"Kling connection {conn_id!r} has no API key: set the connection's password to your "
            "ModelVerse API key."
        )
    if not key.isascii() or not key.isprintable() or any(char.isspace() for char in key):
        raise KlingConnectionConfigError(
            f"Kling connection {conn_id!r}: the API key (the connection's password) holds spaces or "
            "characters that cannot be sent in an HTTP header; paste the key again."
        )
    return key


def _base_url(conn_id: str, host: str | None, port: int | None, schema: str | None, api_key: str) -> str:
    scheme_hint, schema_prefix = _schema(conn_id, schema, api_key)
    raw = (host or "").strip() or DEFAULT_BASE_URL
    if "://" not in raw:
        raw = f"{scheme_hint or 'https'}://{raw.lstrip('/')}"
    # Whatever the host holds, its userinfo, query string and fragment stay out of every message.
    shown = redact(redact_url(raw), api_key)
    problem = f"Kling connection {conn_id!r}: host {shown!r} is not a usable base URL"
    if any(char.isspace() for char in raw):
        raise KlingConnectionConfigError(f"{problem}: it contains whitespace")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as error:
        # httpx quotes pieces of the URL, such as a password it took for a port: only show it without "@".
        detail = "" if "@" in raw else f" ({redact(str(error), api_key)})"
        raise KlingConnectionConfigError(f"{problem}{detail}") from None
    if url.scheme not in _ALLOWED_SCHEMES:
        raise KlingConnectionConfigError(f"{problem}: the scheme must be http or https")
    if not url.host:
        raise KlingConnectionConfigError(f"{problem}: it names no host")
    if url.userinfo:
        raise KlingConnectionConfigError(
            f"Kling connection {conn_id!r}: the host must not carry credentials; put the API key in the "
            "connection's password"
        )
    if url.query or url.fragment:
        raise KlingConnectionConfigError(f"{problem}: it must not carry a query string or a fragment")
    if url.port is not None and not _valid_port(url.port):
        raise KlingConnectionConfigError(
            f"Kling connection {conn_id!r}: port must be from 1 to 65535, got {url.port} (in the host "
            f"field, {shown!r})"
        )
    if _has_dot_segment(_raw_path(raw)):
        raise KlingConnectionConfigError(
            f"{problem}: its path must not contain '.' or '..' segments or backslashes"
        )
    if scheme_hint is not None and url.scheme != scheme_hint:
        raise KlingConnectionConfigError(
            f"Kling connection {conn_id!r}: the host says scheme {url.scheme!r} but the schema field says "
            f"{scheme_hint!r}; set one of them"
        )
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not _valid_port(port):
            raise KlingConnectionConfigError(
                f"Kling connection {conn_id!r}: port must be from 1 to 65535, got {port!r} (in the port "
                "field)"
            )
        if url.port is not None and url.port != port:
            raise KlingConnectionConfigError(
                f"Kling connection {conn_id!r}: the host says port {url.port} but the port field says "
                f"{port}; set one of them"
            )
        url = url.copy_with(port=port)
    host_prefix = url.path.rstrip("/")
    if schema_prefix:
        if host_prefix and host_prefix != schema_prefix:
            shown_prefix = _raw_path(shown).rstrip("/")
            raise KlingConnectionConfigError(
                f"Kling connection {conn_id!r}: the host {shown!r} says path prefix {shown_prefix!r} but "
                f"the schema field says {schema_prefix!r}; set one of them"
            )
        url = url.copy_with(path=schema_prefix)
    netloc = url.netloc.decode("ascii")
    return f"{url.scheme}://{netloc}{url.raw_path.decode('ascii').rstrip('/')}"


def _schema(conn_id: str, schema: str | None, api_key: str) -> tuple[str | None, str]:
    """
    Read the schema field: ``(scheme, "")`` for ``http``/``https``, else ``(None, path prefix)``.

    The path prefix is ``""`` (none) or starts with ``/`` and has no trailing slash.
    """
    value = (schema or "").strip()
    if value.lower() in _ALLOWED_SCHEMES:
        return value.lower(), ""
    problem = (
        f"Kling connection {conn_id!r}: the schema field {redact(value, api_key)!r} is not a usable path "
        "prefix"
    )
    if any(char.isspace() for char in value):
        raise KlingConnectionConfigError(f"{problem}: it contains whitespace")
    if "?" in value or "#" in value:
        raise KlingConnectionConfigError(f"{problem}: it must not carry a query string or a fragment")
    if _has_dot_segment(value):
        raise KlingConnectionConfigError(
            f"{problem}: it must not contain '.' or '..' segments or backslashes"
        )
    prefix = value.strip("/")
    return None, (f"/{prefix}" if prefix else "")


def _raw_path(url: str) -> str:
    """The path of a URL as written (before any normalisation); the URL has a ``scheme://``."""
    rest = url.partition("://")[2]
    slash = rest.find("/")
    return "" if slash < 0 else rest[slash:]


def _has_dot_segment(path: str) -> bool:
    """
    Whether a path has a ``.`` or ``..`` segment or a backslash, literal or percent-encoded.

    ``%2e%2e``, ``.%2E``, ``%2F..%2F``, ``%5C`` and their doubly encoded forms all count: a server or a
    proxy may decode them, then resolve the path.
    """
    decoded = unquote(path)
    segments = (*path.split("/"), *decoded.split("/"))
    return any(unquote(segment) in (".", "..") for segment in segments) or "\\" in unquote(decoded)


def _valid_port(port: int) -> bool:
    return 0 < port < 65536


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
