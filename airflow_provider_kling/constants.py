"""Constants of the ModelVerse task API and of this provider, defined once and imported everywhere."""

from __future__ import annotations

from typing import Final

#: Default base URL of the ModelVerse API (a connection's host overrides it).
DEFAULT_BASE_URL: Final = "https://api.modelverse.cn"
#: Path of the submit endpoint (``POST``, JSON body).
SUBMIT_PATH: Final = "/v1/tasks/submit"
#: Path of the status endpoint (``GET ?task_id=...``).
STATUS_PATH: Final = "/v1/tasks/status"
#: The model this provider targets.
MODEL_NAME: Final = "kling-v3-omni"

#: Connection type, default connection id and the UI name of the connection type.
CONN_TYPE: Final = "kling"
DEFAULT_CONN_ID: Final = "kling_default"
HOOK_NAME: Final = "Kling (ModelVerse)"

#: Vendor error codes (spec, "Error codes").
VENDOR_CODE_RESOURCES_INSUFFICIENT: Final = "006001094"
VENDOR_CODE_RESPONSE_ERROR: Final = "006001095"
VENDOR_CODE_TASK_CREATION_ERROR: Final = "006001099"

#: HTTP statuses that are retried (for a submit only where the server provably created nothing).
RETRYABLE_STATUS_CODES: Final = frozenset({408, 409, 429, 500, 502, 503, 504})

#: How long result URLs are assumed to stay valid (sibling ModelVerse task APIs keep them 24 hours).
RESULT_URL_TTL_HOURS: Final = 24

#: How many bytes of an error body are kept on an exception.
ERROR_BODY_EXCERPT_BYTES: Final = 512

#: Default seconds between two status queries of a wait (trigger, sensor, operator, ``wait_for_task``).
DEFAULT_POLL_INTERVAL: Final = 30.0
#: Default seconds a wait may take, from the moment it starts.
DEFAULT_WAIT_TIMEOUT: Final = 3600.0
#: Largest accepted poll interval: a day, the life of a result URL (a longer interval could first see a
#: ``Success`` after its URLs expired).
MAX_POLL_INTERVAL: Final = RESULT_URL_TTL_HOURS * 3600.0
#: Largest accepted wait timeout: a week, Airflow's default sensor timeout (``[sensors] default_timeout``).
MAX_WAIT_TIMEOUT: Final = 7 * 24 * 3600.0

# The connection extras (validated in ``hooks/_settings.py``, offered by the connection form).
#: Timeout of one HTTP request to the API, in seconds, when the connection does not set one.
DEFAULT_TIMEOUT: Final = 30.0
#: Largest accepted timeout, in seconds (the connection form's maximum).
MAX_TIMEOUT: Final = 600.0
#: Retries of a failed request when the connection does not set ``max_retries``.
DEFAULT_MAX_RETRIES: Final = 5
#: Largest accepted ``max_retries`` (the connection form's maximum).
MAX_RETRIES_LIMIT: Final = 20
#: Async requests of one connection in flight at once on one event loop (one triggerer), when the
#: connection's ``max_in_flight`` extra does not say. Sized for latency (Little's law: in flight = queries
#: per second x latency): 10,000 triggers polling every 30 s at 200 ms API latency need ~67, 2,000 every
#: 10 s ~40; aiohttp's connector holds this many kept-alive connections at O(1) per request (its own
#: default limit is 100). Measured at 0, 50 and 200 ms in ``benchmarks/RESULTS.md``.
DEFAULT_MAX_IN_FLIGHT: Final = 100
#: Largest accepted ``max_in_flight``: every request in flight is an open socket of the triggerer.
MAX_IN_FLIGHT_LIMIT: Final = 1000
