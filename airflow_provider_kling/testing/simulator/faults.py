"""Fault injection: the fault kinds, the endpoints they apply to, :class:`Fault` and :func:`make_fault`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from airflow_provider_kling.constants import VENDOR_CODE_RESOURCES_INSUFFICIENT, VENDOR_CODE_RESPONSE_ERROR
from airflow_provider_kling.testing.simulator.errors import KlingSimulatorError, _integer, _number

if TYPE_CHECKING:
    from collections.abc import Mapping

Endpoint = Literal["submit", "status", "result"]
FaultKind = Literal[
    "rate_limit",
    "server_error",
    "html_error",
    "malformed_json",
    "slow",
    "reset",
    "truncate",
    "expired",
    "gzip",
    "endless",
]

_ENDPOINTS: Final = frozenset(get_args(Endpoint))
_API_ENDPOINTS: Final = frozenset({"submit", "status"})
#: Which endpoints each fault kind applies to, and its options with their defaults.
_FAULT_SPECS: Final[Mapping[str, tuple[frozenset[str], Mapping[str, Any]]]] = {
    "rate_limit": (
        _ENDPOINTS,
        {
            "retry_after": 1,
            "code": VENDOR_CODE_RESOURCES_INSUFFICIENT,
            "message": "Rate limit reached: task resources insufficient, retry later",
        },
    ),
    "server_error": (
        _ENDPOINTS,
        {"status": 500, "code": VENDOR_CODE_RESPONSE_ERROR, "message": "Task response error"},
    ),
    "html_error": (_ENDPOINTS, {"status": 502}),
    "malformed_json": (_API_ENDPOINTS, {}),
    "slow": (_ENDPOINTS, {"delay": 1.0}),
    "reset": (_ENDPOINTS, {}),
    "truncate": (frozenset({"result"}), {}),
    "gzip": (frozenset({"result"}), {}),
    "endless": (frozenset({"result"}), {"seconds": 30.0}),
    "expired": (frozenset({"result"}), {}),
}
_SERVER_ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})
_MAX_DELAY_SECONDS: Final = 300.0


@dataclass(frozen=True)
class Fault:
    """
    An injected fault (see :meth:`KlingSimulator.inject_fault`).

    :param endpoint: ``submit``, ``status`` or ``result``.
    :param kind: what goes wrong.
    :param times: how many more requests it applies to.
    :param after_create: on ``submit``: create (and bill) the task first, then fail.
    :param options: the kind's options, defaults filled in.
    """

    endpoint: str
    kind: str
    times: int
    after_create: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the fault as a JSON-able dict (the shape ``POST /_simulator/faults`` takes)."""
        return {
            "endpoint": self.endpoint,
            "kind": self.kind,
            "times": self.times,
            "after_create": self.after_create,
            **self.options,
        }


def _check_option(kind: str, name: str, value: Any) -> Any:
    """Validate one fault option (they also arrive as JSON from other processes)."""
    if name == "retry_after":
        if isinstance(value, str):  # sent verbatim: an HTTP date, or garbage a client must survive
            if not value.isascii() or not value.isprintable() or len(value) > 100:
                raise KlingSimulatorError(f"retry_after text must be printable ASCII, not {value!r}")
            return value
        return None if value is None else _number(name, value, minimum=0)
    if name == "seconds":
        return _number(name, value, minimum=0, maximum=_MAX_DELAY_SECONDS)
    if name == "code":
        if value is not None and not isinstance(value, str):
            raise KlingSimulatorError(f"code must be a string or null, not {value!r}")
        return value
    if name == "message":
        if not isinstance(value, str):
            raise KlingSimulatorError(f"message must be a string, not {value!r}")
        return value
    if name == "delay":
        return _number(name, value, minimum=0, maximum=_MAX_DELAY_SECONDS)
    if name == "status":
        allowed = _SERVER_ERROR_STATUSES if kind == "server_error" else frozenset(range(500, 600))
        if isinstance(value, bool) or value not in allowed:
            raise KlingSimulatorError(
                f"status of a {kind} fault must be one of {sorted(allowed)}, not {value!r}"
            )
        return value
    raise AssertionError(name)  # pragma: no cover - the spec table lists only the names above


def make_fault(
    endpoint: str, kind: str, *, times: int = 1, after_create: bool = False, **options: Any
) -> Fault:
    """
    Validate a fault description and return it with its defaults filled in.

    :param endpoint: ``submit``, ``status`` or ``result``.
    :param kind: see :meth:`KlingSimulator.inject_fault`.
    :param times: how many requests it applies to (at least 1).
    :param after_create: only on ``submit``: create the task first, then fail.
    :param options: the kind's options.
    :raises KlingSimulatorError: on an unknown endpoint, kind or option, or an invalid value.
    """
    if endpoint not in _ENDPOINTS:
        raise KlingSimulatorError(f"endpoint must be one of {sorted(_ENDPOINTS)}, not {endpoint!r}")
    if kind not in _FAULT_SPECS:
        raise KlingSimulatorError(f"kind must be one of {sorted(_FAULT_SPECS)}, not {kind!r}")
    endpoints, defaults = _FAULT_SPECS[kind]
    if endpoint not in endpoints:
        raise KlingSimulatorError(f"A {kind} fault applies to {sorted(endpoints)}, not to {endpoint!r}")
    _integer("times", times, minimum=1)
    if not isinstance(after_create, bool):
        raise KlingSimulatorError(f"after_create must be a boolean, not {after_create!r}")
    if after_create and endpoint != "submit":
        raise KlingSimulatorError("after_create applies to submit faults only")
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise KlingSimulatorError(f"Unknown option(s) {unknown} for a {kind} fault (allowed: {allowed})")
    checked = {name: _check_option(kind, name, value) for name, value in options.items()}
    return Fault(endpoint, kind, times, after_create, {**defaults, **checked})
