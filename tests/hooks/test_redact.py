"""Tests of :mod:`airflow_provider_kling.hooks._redact`: no form of the key, no URL userinfo survives."""

from __future__ import annotations

import html
import json
import string
import time
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_provider_kling.hooks._redact import REDACTED, redact, redact_url

KEY = "sk-live/ABC+def=ghi"

#: What an API key can be: printable ASCII without spaces (the connection refuses anything else).
keys = st.text(alphabet=string.printable.strip(), min_size=1, max_size=64).filter(
    lambda key: not any(char.isspace() for char in key)
)


def _unicode_escaped(key: str, *, upper: bool = False, only: str | None = None) -> str:
    """Escape characters as ``\\uXXXX`` (all of them, or those in ``only``), as some JSON encoders do."""
    hex_format = "{:04X}" if upper else "{:04x}"
    return "".join(
        "\\u" + hex_format.format(ord(char)) if only is None or char in only else char for char in key
    )


def _lower_hex(text: str) -> str:
    """Lower-case the hex digits of ``%XX`` escapes."""
    parts = text.split("%")
    return parts[0] + "".join("%" + part[:2].lower() + part[2:] for part in parts[1:])


def forms(key: str) -> dict[str, str]:
    """Every form in which a server or a log line may show the key."""
    json_escaped = json.dumps(key)[1:-1]
    return {
        "raw": key,
        "json": json_escaped,
        "json-ensure-ascii-false": json.dumps(key, ensure_ascii=False)[1:-1],
        "json-escaped-slash": json_escaped.replace("/", "\\/"),
        "json-html-safe": _unicode_escaped(key, only="<>&'\"+=/\\"),
        "json-html-safe-upper": _unicode_escaped(key, only="<>&'\"+=/\\", upper=True),
        "json-all-unicode": _unicode_escaped(key),
        "json-twice": json.dumps(json_escaped)[1:-1],
        "url-quote": quote(key, safe=""),
        "url-quote-default-safe": quote(key),
        "url-quote-plus": quote_plus(key),
        "url-quote-lower-hex": _lower_hex(quote(key, safe="")),
        "url-quote-twice": quote(quote(key, safe=""), safe=""),
        "url-plus-decoded-as-space": key.replace("+", " "),
        "html": html.escape(key),
        "html-numeric": "".join(f"&#{ord(char)};" for char in key),
        "html-hex": "".join(f"&#x{ord(char):x};" for char in key),
    }


def pieces(text: str) -> list[str]:
    """The text between the redaction marks (a key may contain ``*`` itself)."""
    return text.split(REDACTED)


@given(key=keys, before=st.text(max_size=30), after=st.text(max_size=30))
@example(key="sk-live/ABC", before="", after="")
@example(key='a"b\\c', before='{"error": "', after='"}')
@example(key="*", before="*", after="**")
def test_no_form_of_the_key_survives(key: str, before: str, after: str) -> None:
    for name, form in forms(key).items():
        redacted = redact(f"{before}{form}{after}", key)
        assert all(form not in piece for piece in pieces(redacted)), name
        assert all(key not in piece for piece in pieces(redacted)), name


@given(key=keys, text=st.text(alphabet=string.ascii_letters + string.digits + " .,:", max_size=60))
def test_text_without_the_key_is_unchanged(key: str, text: str) -> None:
    if key in text or REDACTED in text:
        return
    if any(form in text for form in forms(key).values()):
        return
    assert redact(text, key) == text


@pytest.mark.parametrize("secret", [None, ""])
def test_no_secret_changes_nothing(secret: str | None) -> None:
    assert redact("anything at all", secret) == "anything at all"


@pytest.mark.parametrize(
    "text",
    [
        '{"error": {"message": "bad key sk-live\\/ABC+def=ghi"}}',
        '{"error": {"message": "bad key sk-live\\u002fABC\\u002Bdef\\u003dghi"}}',
        "GET /v1?key=sk-live%2FABC%2Bdef%3Dghi HTTP/1.1",
        "GET /v1?key=sk-live%2fABC%2bdef%3dghi HTTP/1.1",
        "key=sk-live/ABC def=ghi",
        "<p>sk-live&#x2F;ABC&#43;def=ghi</p>",
    ],
)
def test_known_echoes_are_redacted(text: str) -> None:
    redacted = redact(text, KEY)
    assert REDACTED in redacted
    assert "ABC" not in redacted


def test_redact_replaces_every_occurrence_once() -> None:
    assert redact(f"{KEY} and {json.dumps(KEY)}", KEY) == '*** and "***"'


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://api.example.com/v1/x", "https://api.example.com/v1/x", id="plain"),
        pytest.param("ftp://:KEY@host.example", "ftp://***@host.example", id="password-only"),
        pytest.param("ftp://user:KEY@host/p", "ftp://***@host/p", id="user-password"),
        pytest.param("https://user@host", "https://***@host", id="user-only"),
        pytest.param("https://u:p@ss@host/x", "https://***@host/x", id="at-in-password"),
        pytest.param("https://u:sk-live/ABC@host/x", "https://***@host/x", id="slash-in-password"),
        pytest.param("https://u:pa?ss@host", "https://***", id="question-mark-in-password"),
        pytest.param("https://u:pa#ss@host", "https://***", id="hash-in-password"),
        pytest.param("https://h/a?X-Amz-Signature=s3cr3t&b=1", "https://h/a", id="query"),
        pytest.param("https://h/a#token=s3cr3t", "https://h/a", id="fragment"),
        pytest.param("https://h:8443/a/@2x.mp4?sig=1", "https://h:8443/a/@2x.mp4", id="at-in-path"),
        pytest.param("https://[::1]:8089/x", "https://[::1]:8089/x", id="ipv6"),
        pytest.param("user:KEY@host/path", "***@host/path", id="no-scheme"),
        pytest.param("//user:KEY@host/path", "//***@host/path", id="scheme-relative"),
        pytest.param("https:////:KEY@host", "https:////***@host", id="extra-slashes"),
        pytest.param("https:////:KEY#@host", "https:////***", id="extra-slashes-fragment"),
        pytest.param("file:///home/a@b", "file:///home/a@b", id="empty-authority"),
        pytest.param("not a url", "not a url", id="not-a-url"),
        pytest.param("", "", id="empty"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


userinfo_parts = st.text(alphabet=string.printable.strip(), min_size=1, max_size=20)


@given(
    scheme=st.sampled_from(["http", "https", "ftp", "s3"]),
    user=st.one_of(st.just(""), userinfo_parts),
    password=userinfo_parts,
    host=st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True),
    port=st.one_of(st.none(), st.integers(0, 99999)),
    path=st.text(alphabet=string.ascii_letters + "/-_.", max_size=20),
    query=st.text(alphabet=string.printable.strip(), max_size=20),
)
def test_redact_url_drops_any_userinfo_and_query(
    scheme: str, user: str, password: str, host: str, port: int | None, path: str, query: str
) -> None:
    secret = f"SECRET{password}"
    netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@{host}" + ("" if port is None else f":{port}")
    url = f"{scheme}://{netloc}/{path}" + (f"?q=SIGNATURE{query}" if query else "")
    redacted = redact_url(url)
    assert "SECRET" not in redacted
    assert "SIGNATURE" not in redacted
    assert redacted.startswith(f"{scheme}://***@{host}")


@pytest.mark.parametrize("key", ["sk-live/ABC+def", "sk\\\\\\\\\\\\live", '"/\\"/\\', "%%%%x", "&&&#"])
def test_hostile_text_costs_linear_time(key: str) -> None:
    # A server's error body is redacted before it is cut to an excerpt: 64 KiB of a repeated escape
    # prefix must not make the pattern backtrack for seconds.
    start = time.perf_counter()
    for filler in ("\\", "%", "%25", "&#", "&#0", "\\u00", "a"):
        redact(filler * (64 * 1024 // len(filler)), key)
    assert time.perf_counter() - start < 2.0
