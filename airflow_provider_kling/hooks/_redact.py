r"""
Keep the API key, and any credentials a URL carries, out of texts: exception messages, log lines, events.

A server may echo the key in another form than the one sent: JSON-escaped (``sk-live\/ABC``,
``sk-live\u002fABC``, escaped twice when a JSON body is quoted inside another), URL-encoded (``%2F``,
``%2f``, ``%252F``), HTML-escaped (``&#x2F;``). :func:`redact` matches the key with every character in any
of those forms, so a text with the key in any of them, or in a mixture of them, comes out without it.
:func:`redact_url` removes what a URL may carry besides its address: userinfo, query string and fragment.

Pure functions with no dependency on the rest of the package, so that every module can import them.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from itertools import groupby
from typing import Final
from urllib.parse import quote, quote_plus

#: What replaces the API key (or a URL's userinfo) wherever it shows up in a text.
REDACTED: Final = "***"

#: Characters JSON encoders escape with a backslash (``\\"``, ``\\\\``, ``\\/``), possibly more than once.
_BACKSLASH_ESCAPED: Final = frozenset('"\\/')
#: JSON's short escapes of control characters.
_JSON_SHORT_ESCAPES: Final = {"\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
#: The named HTML entities an HTML page may use for a character.
_HTML_ENTITIES: Final = {
    '"': ("&quot;",),
    "&": ("&amp;",),
    "<": ("&lt;",),
    ">": ("&gt;",),
    "'": ("&apos;",),
}
#: How many rounds of escaping are recognised (a JSON body quoted in a JSON string, and once more).
_MAX_NESTING: Final = 3
#: Most backslashes one character can carry after :data:`_MAX_NESTING` rounds of JSON escaping: each
#: round doubles them (``/``, ``\\/``, ``\\\\\\/``, then 7 backslashes; ``\\`` becomes 2, 4, 8).
#: Bounded, so that a hostile body of backslashes costs linear time.
_MAX_BACKSLASHES: Final = 2**_MAX_NESTING
#: The backslashes of an escape sequence, after one or more rounds of escaping.
_BACKSLASHES: Final = rf"\\{{1,{_MAX_BACKSLASHES}}}"
#: How many compiled key patterns are kept (one per key in use: normally one).
_PATTERN_CACHE_SIZE: Final = 16


def secret_forms(secret: str) -> list[str]:
    """
    Return the literal forms of ``secret`` a server is most likely to echo: raw, JSON-escaped, URL-encoded.

    For a literal matcher such as Airflow's secrets masker; :func:`redact` matches every form.

    :param secret: the API key.
    """
    forms = [secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret, safe="")]
    return [form for position, form in enumerate(forms) if form and form not in forms[:position]]


def redact(text: str, secret: str | None) -> str:
    r"""
    Return ``text`` with every form of ``secret`` a server may echo replaced by ``***``.

    Each character of the secret may appear as itself; as a JSON ``\uXXXX`` escape (either case of hex,
    a UTF-16 surrogate pair beyond the BMP); backslash-escaped if it is ``"``, ``\`` or ``/`` (``\/``);
    as a JSON short escape (``\n``) if it is a control character; URL percent-encoded, in either case of
    hex (``%2F``, ``%2f``); as an HTML character reference (``&#47;``, ``&#x2f;``, ``&quot;``); and ``+``
    also as a space (a form-decoded ``+``). Escapes are recognised up to three rounds deep (a JSON body
    quoted in a JSON string: ``\\\/``; ``%252F``), and the forms may be mixed within one occurrence.

    Matching takes time linear in the text for any key without backslashes (real keys have none).

    :param text: any text bound for an exception, a log line or an event.
    :param secret: the API key (nothing is replaced when it is ``None`` or empty).
    """
    if not secret or not text:
        return text
    return _pattern(secret).sub(REDACTED, text)


def redact_url(url: str) -> str:
    """
    Return ``url`` without its userinfo (replaced by ``***``), query string and fragment.

    Works on any text, well-formed URL or not, without raising: ``ftp://user:KEY@host/p?sig=x`` gives
    ``ftp://***@host/p``. The userinfo runs to the last ``@`` before the query string; an ``@`` after a
    ``/`` belongs to the path, unless what precedes that ``/`` is empty or cannot be a host and port
    (``u:sk/x@host`` is a password with a slash in it) or a ``:`` comes between them (``u/x:pw@host``):
    when in doubt, more is hidden. An authority that is no host and port at all (a password cut short
    by a ``?`` or ``#``) is replaced, with all that follows, by ``***``.

    :param url: a URL, or any text that may be one.
    """
    if url.startswith("//"):
        prefix, rest = "//", url[2:]
    else:
        scheme, separator, remainder = url.partition("://")
        prefix, rest = (scheme + separator, remainder) if separator else ("", url)
    if prefix:  # Browsers and WHATWG parsers skip extra slashes: "https:////user:pw@host".
        slashes = len(rest) - len(rest.lstrip("/\\"))
        prefix, rest = prefix + rest[:slashes], rest[slashes:]
    query_start = _first_index(rest, "?#")
    at = rest.rfind("@", 0, query_start)
    if at >= 0:
        slash = _first_index(rest[:at], "/\\")
        if slash == at or ":" in rest[slash:at] or not _is_host_and_port(rest[:slash]):
            return f"{prefix}{REDACTED}@{rest[at + 1 : query_start]}"
    authority_end = _first_index(rest, "/\\?#")
    if prefix and authority_end and not _is_host_and_port(rest[:authority_end]):
        return prefix + REDACTED
    return prefix + rest[:query_start]


@lru_cache(maxsize=_PATTERN_CACHE_SIZE)
def _pattern(secret: str) -> re.Pattern[str]:
    pieces = []
    for char, group in groupby(secret):
        count = len(list(group))
        if char == "\\":
            pieces.append(_backslashes_pattern(count))
        else:
            pieces.extend([_char_pattern(char)] * count)
    return re.compile("".join(pieces))


def _backslashes_pattern(count: int) -> str:
    """
    A regular expression that matches a run of ``count`` backslashes of the secret in any of its forms.

    The run is matched as a whole (raw or escaped: ``count`` to ``count * 8`` backslashes; or each of its
    backslashes in one of the other forms), not backslash by backslash: alternatives per backslash would
    make a text full of backslashes cost exponential time.
    """
    other_forms = _char_pattern("\\", with_backslashes=False)
    return rf"(?:\\{{{count},{count * _MAX_BACKSLASHES}}}|{other_forms}{{{count}}})"


def _char_pattern(char: str, *, with_backslashes: bool = True) -> str:
    """A regular expression that matches one character of the secret in any of its forms."""
    code = ord(char)
    escape = _BACKSLASHES
    forms = [re.escape(char)] if with_backslashes else []
    if char in _BACKSLASH_ESCAPED and with_backslashes:
        forms.append(escape + re.escape(char))
    if char in _JSON_SHORT_ESCAPES:
        forms.append(escape + _JSON_SHORT_ESCAPES[char])
    if code <= 0xFFFF:
        forms.append(rf"{escape}u(?i:{code:04x})")
    else:
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms.append(rf"{escape}u(?i:{high:04x}){escape}u(?i:{low:04x})")
    forms.append("".join(f"%(?:25){{0,{_MAX_NESTING - 1}}}(?i:{byte:02x})" for byte in char.encode("utf-8")))
    forms.append(rf"&#0{{0,4}}{code};")
    forms.append(rf"&#[xX]0{{0,4}}(?i:{code:x});")
    forms.extend(re.escape(entity) for entity in _HTML_ENTITIES.get(char, ()))
    if char == "+":
        forms.append(" ")
    return "(?:" + "|".join(forms) + ")"


def _first_index(text: str, characters: str) -> int:
    """The index of the first of ``characters`` in ``text``, or ``len(text)``."""
    return min((index for char in characters if (index := text.find(char)) >= 0), default=len(text))


_HOST_AND_PORT: Final = re.compile(
    r"(?:\[[0-9A-Za-z:.%]*\]|[0-9A-Za-z\-._~%!$&'()*+,;=]+)(?::[0-9]*)?", re.ASCII
)


def _is_host_and_port(authority: str) -> bool:
    """Whether ``authority`` can be a URL's host and optional port (and not ``user:password``)."""
    return bool(authority) and _HOST_AND_PORT.fullmatch(authority) is not None
