"""The simulator's error, :class:`KlingSimulatorError`, and the number checks that raise it."""

from __future__ import annotations

from typing import Any


class KlingSimulatorError(Exception):
    """A simulator setting or fault is invalid (raised by the Python API, a 400 over HTTP)."""


def _number(name: str, value: Any, *, minimum: float, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KlingSimulatorError(f"{name} must be a number, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum:g} to {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise KlingSimulatorError(f"{name} must be {bound}, not {value!r}")
    return value


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KlingSimulatorError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise KlingSimulatorError(f"{name} must be at least {minimum}, not {value!r}")
    return value
