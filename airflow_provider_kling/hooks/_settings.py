"""
Airflow connection -> the settings :class:`~airflow_provider_kling.hooks.kling.KlingHook` runs with.

One pure function, :func:`settings_from_connection`, so that every parsing rule is tested on its own,
without Airflow, a secrets backend or a network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import httpx

from airflow_provider_kling import __version__
from airflow_provider_kling.constants import DEFAULT_BASE_URL
from airflow_provider_kling.exceptions import KlingConnectionConfigError
from airflow_provider_kling.hooks._errors import redact

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Timeout of one HTTP request to the API, in seconds, when the connection does not set one.
DEFAULT_TIMEOUT: Final = 30.0
#: Largest accepted timeout, in seconds (the connection form's maximum).
MAX_TIMEOUT: Final = 600.0
#: Retries of a failed request when the connection does not set ``max_retries``.
DEFAULT_MAX_RETRIES: Final = 5
#: Largest accepted ``max_retries`` (the connection form's maximum).
MAX_RETRIES_LIMIT: Final = 20
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
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    timeout: float
    max_retries: int

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

        :param url: an absolute URL.
        """
        try:
            target = httpx.URL(url)
            base = httpx.URL(self.base_url)
        except httpx.InvalidURL:
            return False
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            return False
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
) -> KlingSettings:
    """
    Turn an Airflow connection's fields into :class:`KlingSettings`.

    - password: the API key (required; surrounding whitespace is dropped);
    - host: the base URL: empty means :data:`~airflow_provider_kling.constants.DEFAULT_BASE_URL`, no scheme
      means ``https://``, ``http://`` is kept as given, a trailing slash is dropped, a path prefix (a
      proxy) is kept, a port may be in the host or in the connection's port field;
    - extras ``timeout`` (seconds, default 30) and ``max_retries`` (default 5).

    :param conn_id: the connection id, used in error messages.
    :param host: the connection's host field.
    :param password: the connection's password field: the API key.
    :param port: the connection's port field.
    :param extra: the connection's extras, already deserialized.
    :param timeout: overrides the ``timeout`` extra (the hook's constructor argument).
    :param max_retries: overrides the ``max_retries`` extra (the hook's constructor argument).
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
    except ValueError as error:
        raise KlingConnectionConfigError(
            f"Kling connection {conn_id!r}: {redact(str(error), api_key)}"
        ) from None
    return KlingSettings(
        conn_id=conn_id,
        base_url=_base_url(conn_id, host, port),
        api_key=api_key,
        timeout=resolved_timeout,
        max_retries=resolved_retries,
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


def _base_url(conn_id: str, host: str | None, port: int | None) -> str:
    raw = (host or "").strip() or DEFAULT_BASE_URL
    if "://" not in raw:
        raw = "https://" + raw
    problem = f"Kling connection {conn_id!r}: host {raw!r} is not a usable base URL"
    if any(char.isspace() for char in raw):
        raise KlingConnectionConfigError(f"{problem}: it contains whitespace")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as error:
        raise KlingConnectionConfigError(f"{problem} ({error})") from None
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
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise KlingConnectionConfigError(
                f"Kling connection {conn_id!r}: port must be from 1 to 65535, got {port!r}"
            )
        if url.port is not None and url.port != port:
            raise KlingConnectionConfigError(
                f"Kling connection {conn_id!r}: the host says port {url.port} but the port field says "
                f"{port}; set one of them"
            )
        url = url.copy_with(port=port)
    netloc = url.netloc.decode("ascii")
    return f"{url.scheme}://{netloc}{url.path.rstrip('/')}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
