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
