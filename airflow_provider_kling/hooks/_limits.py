"""
The bounds of a result download (:class:`DownloadLimits`) and their defaults.

Kept apart from the download itself (``hooks/_download.py``, which needs httpx) so that the transfer operator
validates its limits when a DAG is parsed without importing the HTTP machinery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

#: The largest result video accepted by default (a 15 s 1080p video is a few tens of MiB).
DEFAULT_MAX_RESULT_BYTES: Final = 1024 * 1024 * 1024
#: Default seconds a whole download may take: connecting, redirects, reading and resuming included.
DEFAULT_DOWNLOAD_TIMEOUT: Final = 1800.0
#: Default requests per result: the first one and the ``Range`` resumes.
DEFAULT_MAX_DOWNLOAD_ATTEMPTS: Final = 3
#: Default seconds before the first resume; doubles after each.
DEFAULT_DOWNLOAD_RETRY_DELAY: Final = 1.0


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    """
    The bounds of one result download.

    :param max_bytes: the largest video accepted, in bytes.
    :param timeout: seconds the whole download may take.
    :param read_timeout: seconds one connect or one read may take.
    :param max_attempts: requests in all (the first one and the ``Range`` resumes).
    :param retry_delay: seconds before the first resume; doubles after each.
    """

    max_bytes: int = DEFAULT_MAX_RESULT_BYTES
    timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    read_timeout: float = 30.0
    max_attempts: int = DEFAULT_MAX_DOWNLOAD_ATTEMPTS
    retry_delay: float = DEFAULT_DOWNLOAD_RETRY_DELAY

    def __post_init__(self) -> None:
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise ValueError(f"max_bytes must be a whole number of bytes >= 1, got {self.max_bytes!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError(f"max_attempts must be a whole number >= 1, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be a whole number >= 1, got {self.max_attempts!r}")
        for name in ("timeout", "read_timeout"):
            value = getattr(self, name)
            if not _finite_number(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number of seconds above 0, got {value!r}")
        if not _finite_number(self.retry_delay) or self.retry_delay < 0:
            raise ValueError(f"retry_delay must be a finite number of seconds >= 0, got {self.retry_delay!r}")


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
