"""
The input-file rules R18, R19 and R21: image and video URLs, and base64 images checked in full.

The file checks themselves (format, size, pixel size; container, length, frame rate) live in
:mod:`airflow_provider_kling.media`; here they run on the only files a request holds, base64 images. A URL
is checked by its form and its path's extension only.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_provider_kling import media
from airflow_provider_kling.exceptions import MediaHeaderError, NeedMoreBytesError
from airflow_provider_kling.models.rules import _Invalid, _kind, _show

#: A URL scheme; bounded, so that a 10 MB base64 string (all scheme characters) is rejected at once.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):")


def _url_path_problem(url: str, extensions: tuple[str, ...], rule: str) -> None:
    """Check an ``http(s)://`` or ``s3://`` URL's form and its path's extension (R18, R21)."""
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        raise _Invalid(f"{_show(url)} is not a valid URL ({error})", rule) from None
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if not parts.netloc or not parts.path.lstrip("/"):
            raise _Invalid(f"{_show(url)} is not an s3://bucket/key URL", rule)
        path = parts.path
    else:
        if not parts.hostname:
            raise _Invalid(f"{_show(url)} has no host", rule)
        path = unquote(parts.path)
    problem = media.extension_problem(path, extensions)
    if problem:
        raise _Invalid(problem, rule)


def _image_url(value: Any) -> str:
    """R18/R19: an ``http(s)://`` or ``s3://`` URL of a JPEG/PNG file, or a bare base64 JPEG/PNG image."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string (a URL or bare base64), got {_kind(value)}")
    if not value:
        raise _Invalid("must not be empty: an https:// or s3:// URL, or bare base64")
    scheme = _SCHEME.match(value)
    if scheme is not None:
        name = scheme.group(1).lower()
        if name == "data":
            raise _Invalid(
                "a data: URI is not accepted: send the bare base64 text, without the 'data:...;base64,' "
                "prefix",
                "R19",
            )
        if name not in ("http", "https", "s3"):
            raise _Invalid(
                f"URL scheme {name!r} is not supported: use https://, http://, s3:// or bare base64"
            )
        _url_path_problem(value, media.IMAGE_EXTENSIONS, "R18")
        return value
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise _Invalid(
            f"neither an https://, http:// or s3:// URL nor valid bare base64 ({error})", "R19"
        ) from None
    try:
        info = media.read_image_info(data)
    except NeedMoreBytesError:
        raise _Invalid(f"the base64 image is truncated ({len(data)} bytes)") from None
    except MediaHeaderError as error:
        raise _Invalid(f"the base64 data is not a usable image: {error}") from None
    problems = media.check_image(info, len(data))
    if problems:
        raise _Invalid(f"the base64 {info.format.upper()} image is {'; '.join(problems)}")
    return value


def _video_url(value: Any) -> str:
    """R21: an ``http(s)://`` or ``s3://`` URL of an MP4/MOV file."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string (a URL), got {_kind(value)}")
    scheme = _SCHEME.match(value)
    if scheme is None or scheme.group(1).lower() not in ("http", "https", "s3"):
        raise _Invalid(f"{_show(value)} is not an https://, http:// or s3:// URL of an MP4 or MOV file")
    _url_path_problem(value, media.VIDEO_EXTENSIONS, "R21")
    return value
