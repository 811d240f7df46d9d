"""
Pydantic models of the Kling V3 Omni task API: the requests with every API rule (R1..R22), the responses.

Import from here; the modules are an implementation detail:

- :mod:`.rules`: the limits, the rule errors, the one-field checks, the value sets (enums) and the
  warning of ignored fields; its docstring gives the message format and the decisions where the spec is
  silent;
- :mod:`._media_rules`: the input-file checks R18, R19, R21 (URLs and base64 images);
- :mod:`.request`: :class:`KlingVideoRequest` and its parts, with the rules across fields;
- :mod:`.response`: :class:`KlingSubmitResult`, :class:`KlingTask`, :class:`TaskStatus` and
  :func:`check_kling_task_id`.
"""

from __future__ import annotations

from airflow_provider_kling.constants import MODEL_NAME
from airflow_provider_kling.models.request import (
    ImageInput,
    KlingInput,
    KlingParameters,
    KlingVideoRequest,
    Shot,
    VideoInput,
)
from airflow_provider_kling.models.response import (
    KLING_TASK_ID_PATTERN,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_KLING_TASK_ID_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    MAX_RESULT_URL_LENGTH,
    KlingSubmitResult,
    KlingTask,
    TaskStatus,
    check_kling_task_id,
)
from airflow_provider_kling.models.rules import (
    DEFAULT_DURATION,
    MAX_DURATION,
    MAX_DURATION_WITH_VIDEO,
    MAX_EXTERNAL_TASK_ID_LENGTH,
    MAX_IMAGES,
    MAX_IMAGES_WITH_END_FRAME,
    MAX_IMAGES_WITH_VIDEO,
    MAX_PROMPT_LENGTH,
    MAX_SHOT_PROMPT_LENGTH,
    MAX_SHOTS,
    MAX_VIDEOS,
    MIN_DURATION,
    RULE_ERROR_TYPE,
    AspectRatio,
    ImageType,
    KeepOriginalSound,
    KlingIgnoredFieldWarning,
    Loc,
    Mode,
    ReferType,
    ShotType,
    Sound,
    ignored_field_warnings_suppressed,
)

__all__ = [
    "DEFAULT_DURATION",
    "KLING_TASK_ID_PATTERN",
    "MAX_DURATION",
    "MAX_DURATION_WITH_VIDEO",
    "MAX_ERROR_MESSAGE_LENGTH",
    "MAX_EXTERNAL_TASK_ID_LENGTH",
    "MAX_IMAGES",
    "MAX_IMAGES_WITH_END_FRAME",
    "MAX_IMAGES_WITH_VIDEO",
    "MAX_KLING_TASK_ID_LENGTH",
    "MAX_PROMPT_LENGTH",
    "MAX_REQUEST_ID_LENGTH",
    "MAX_RESULT_URL_LENGTH",
    "MAX_SHOTS",
    "MAX_SHOT_PROMPT_LENGTH",
    "MAX_VIDEOS",
    "MIN_DURATION",
    "MODEL_NAME",
    "RULE_ERROR_TYPE",
    "AspectRatio",
    "ImageInput",
    "ImageType",
    "KeepOriginalSound",
    "KlingIgnoredFieldWarning",
    "KlingInput",
    "KlingParameters",
    "KlingSubmitResult",
    "KlingTask",
    "KlingVideoRequest",
    "Loc",
    "Mode",
    "ReferType",
    "Shot",
    "ShotType",
    "Sound",
    "TaskStatus",
    "VideoInput",
    "check_kling_task_id",
    "ignored_field_warnings_suppressed",
]
