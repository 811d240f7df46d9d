"""
``KlingHook.stream_result`` (``hooks/_download.py``) against hostile CDNs: bounded, redirect-safe, complete.

respx answers for public hosts (no socket); :class:`hostile.HostileServer` answers with raw bytes on
127.0.0.1 for what needs a real connection (trickling, endless, garbled or close-delimited bodies).
"""

from __future__ import annotations

import gzip
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx
from hostile import Exchange, HostileServer, response_head

from airflow_provider_kling.exceptions import KlingResultDownloadError, KlingResultExpiredError
from airflow_provider_kling.hooks._limits import DownloadLimits
from airflow_provider_kling.testing.simulator import result_video

from ._support import API_KEY, BASE_URL

if TYPE_CHECKING:
    from collections.abc import Iterator

    from hostile import Reply

    from airflow_provider_kling.hooks.kling import KlingHook

RESULT_URL = "https://cdn.test/results/task-1/1.mp4?X-Amz-Signature=abc"
VIDEO = bytes(range(256)) * 64
MP4 = result_video("16:9")
#: Generous bound of a test's own duration, for checks that something ended "on time" (noisy machines).
ON_TIME = 5.0


def download(hook: KlingHook, url: str, **options: object) -> bytes:
    with hook.stream_result(url, kling_task_id="task-1", retry_delay=0, **options) as result:  # type: ignore[arg-type]
        return b"".join(result)


def serve(body: bytes, status: int = 200, **headers: str) -> respx.MockRouter:
    return httpx.Response(status, content=body, headers=headers)  # type: ignore[return-value]


def test_bytes_total_and_no_key_to_a_foreign_host(hook: KlingHook) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get(RESULT_URL).mock(return_value=httpx.Response(200, content=VIDEO))
        with hook.stream_result(RESULT_URL, kling_task_id="task-1") as result:
            assert result.total == len(VIDEO)
            data = b"".join(result)
    assert data == VIDEO
    request = route.calls.last.request
    assert "Authorization" not in request.headers
    assert "Range" not in request.headers
    assert request.headers["Accept-Encoding"] == "identity"


def test_key_only_to_the_api_and_never_on_a_redirect(hook: KlingHook) -> None:
    with respx.mock(base_url=BASE_URL, assert_all_mocked=True) as api:
        first = api.get("/results/task-1/1.mp4").mock(
            return_value=httpx.Response(302, headers={"Location": "/elsewhere/1.mp4"})
        )
        second = api.get("/elsewhere/1.mp4").mock(return_value=httpx.Response(200, content=VIDEO))
        assert download(hook, f"{BASE_URL}/results/task-1/1.mp4") == VIDEO
    assert first.calls.last.request.headers["Authorization"] == API_KEY
    assert "Authorization" not in second.calls.last.request.headers  # same host, still not sent


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://cdn2.test/1.mp4", "from https to http"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fe80::1]/x", "link-local"),
        ("https://[::ffff:169.254.169.254]/x", "link-local"),
        ("https://127.0.0.1/x", "loopback or private"),
        ("https://10.0.0.7/x", "loopback or private"),
        ("https://localhost/x", "loopback or private"),
        ("https://0.0.0.0/x", "unspecified"),
        ("ftp://cdn2.test/1.mp4", "only http"),
        ("file:///etc/passwd", "only http"),
    ],
)
def test_redirects_a_result_download_must_not_follow(hook: KlingHook, location: str, why: str) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        router.get(RESULT_URL).mock(return_value=httpx.Response(302, headers={"Location": location}))
        with pytest.raises(KlingResultDownloadError, match=why) as info:
            download(hook, RESULT_URL)
    assert "X-Amz-Signature" not in str(info.value)


def test_at_most_five_redirects(hook: KlingHook) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get(url__regex=r"https://cdn\.test/r\d+").mock(
            side_effect=lambda request: httpx.Response(
                302, headers={"Location": f"/r{int(request.url.path[2:]) + 1}"}
            )
        )
        with pytest.raises(KlingResultDownloadError, match="more than 5 times"):
            download(hook, "https://cdn.test/r0")
    assert route.call_count == 6


def test_a_public_redirect_is_followed(hook: KlingHook) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        router.get("https://short.test/r").mock(
            return_value=httpx.Response(302, headers={"Location": RESULT_URL})
        )
        router.get(RESULT_URL).mock(return_value=httpx.Response(200, content=VIDEO))
        assert download(hook, "https://short.test/r") == VIDEO


def test_a_loopback_result_may_redirect_on_loopback_but_never_to_link_local(hook: KlingHook) -> None:
    def redirect(to: str) -> Reply:
        return lambda exchange: exchange.send(response_head(302, {"Location": to, "Content-Length": "0"}))

    def video(exchange: Exchange) -> None:
        exchange.send(response_head(200, {"Content-Length": str(len(VIDEO))}) + VIDEO)

    with HostileServer([redirect("/final.mp4"), video]) as server:
        assert download(hook, server.url()) == VIDEO
    with (
        HostileServer([redirect("http://169.254.169.254/")]) as server,
        pytest.raises(KlingResultDownloadError, match="link-local"),
    ):
        download(hook, server.url())


@pytest.mark.parametrize("status", [403, 404, 410])
def test_expired(hook: KlingHook, status: int) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get(RESULT_URL).mock(return_value=httpx.Response(status, text="<Error/>"))
        with pytest.raises(KlingResultExpiredError, match="task-1") as info:
            download(hook, RESULT_URL)
    assert info.value.status_code == status
    assert route.call_count == 1


def test_transient_failures_to_open_are_retried(hook: KlingHook) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get(RESULT_URL).mock(
            side_effect=[
                httpx.Response(503),
                httpx.ConnectError("refused"),
                httpx.Response(200, content=VIDEO),
            ]
        )
        assert download(hook, RESULT_URL) == VIDEO
    assert route.call_count == 3


def test_another_error_status_is_final_and_hides_the_signature(hook: KlingHook) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get(RESULT_URL).mock(return_value=httpx.Response(400, text="bad"))
        with pytest.raises(KlingResultDownloadError, match="HTTP 400") as info:
            download(hook, RESULT_URL)
    assert route.call_count == 1
    assert "X-Amz-Signature" not in str(info.value)


class BreakingStream(httpx.SyncByteStream):
    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.at = data, at

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: self.at]
        raise httpx.ReadError("connection reset mid-body")


def test_a_reset_is_resumed_with_range(hook: KlingHook) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "range" not in request.headers:
            headers = {"Content-Length": str(len(VIDEO))}
            return httpx.Response(200, headers=headers, stream=BreakingStream(VIDEO, 1000))
        assert request.headers["range"] == "bytes=1000-"
        headers = {"Content-Range": f"bytes 1000-{len(VIDEO) - 1}/{len(VIDEO)}"}
        return httpx.Response(206, headers=headers, content=VIDEO[1000:])

    with respx.mock(assert_all_mocked=True) as router:
        router.get(RESULT_URL).mock(side_effect=answer)
        assert download(hook, RESULT_URL) == VIDEO


def test_a_cdn_that_ignores_range_is_read_again_with_the_prefix_dropped(hook: KlingHook) -> None:
    responses = [
        httpx.Response(200, headers={"Content-Length": str(len(VIDEO))}, stream=BreakingStream(VIDEO, 1000)),
        httpx.Response(200, content=VIDEO),
    ]
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get(RESULT_URL).mock(side_effect=responses)
        assert download(hook, RESULT_URL) == VIDEO
    assert route.calls[1].request.headers["range"] == "bytes=1000-"


def test_a_content_range_that_does_not_match_is_refused(hook: KlingHook) -> None:
    responses = [
        httpx.Response(200, headers={"Content-Length": str(len(VIDEO))}, stream=BreakingStream(VIDEO, 1000)),
        httpx.Response(
            206, headers={"Content-Range": f"bytes 0-{len(VIDEO) - 1}/{len(VIDEO)}"}, content=VIDEO
        ),
    ]
    with respx.mock(assert_all_mocked=True) as router:
        router.get(RESULT_URL).mock(side_effect=responses)
        with pytest.raises(KlingResultDownloadError, match="Content-Range"):
            download(hook, RESULT_URL)


def test_a_declared_size_over_the_cap_is_refused_before_reading(hook: KlingHook) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        router.get(RESULT_URL).mock(return_value=httpx.Response(200, content=VIDEO))
        with pytest.raises(KlingResultDownloadError, match="larger than the 1000-byte cap"):
            download(hook, RESULT_URL, max_bytes=1000)


def test_an_endless_body_is_cut_at_the_cap(hook: KlingHook) -> None:
    def endless(exchange: Exchange) -> None:
        exchange.endless(response_head(200, {"Content-Type": "video/mp4"}))

    started = time.monotonic()
    with HostileServer([endless]) as server, pytest.raises(KlingResultDownloadError, match="cap"):
        download(hook, server.url(), max_bytes=4 * 1024 * 1024)
    assert time.monotonic() - started < ON_TIME


def test_a_gzip_bomb_is_cut_at_the_cap(hook: KlingHook) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    with respx.mock(assert_all_mocked=True) as router:
        router.get(RESULT_URL).mock(
            return_value=httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"})
        )
        with pytest.raises(KlingResultDownloadError, match="cap"):
            download(hook, RESULT_URL, max_bytes=1024 * 1024)


def test_a_trickling_body_ends_at_the_download_timeout(hook: KlingHook) -> None:
    def trickle(exchange: Exchange) -> None:
        exchange.send(response_head(200, {"Content-Length": "1000"}))
        exchange.trickle(b"x" * 1000, every=0.1)

    started = time.monotonic()
    with (
        HostileServer([trickle]) as server,
        pytest.raises(KlingResultDownloadError, match="within its timeout of 1 s"),
    ):
        download(hook, server.url(), timeout=1)
    assert time.monotonic() - started < ON_TIME


def test_a_server_that_never_answers_ends_at_the_download_timeout(hook: KlingHook) -> None:
    started = time.monotonic()
    with HostileServer([lambda exchange: exchange.stop.wait(30)]) as server:
        with pytest.raises(KlingResultDownloadError):
            download(hook, server.url(), timeout=1, max_attempts=5)
        elapsed = time.monotonic() - started
    assert elapsed < ON_TIME


def test_gzip_is_decoded_and_its_length_checked_and_resumed(hook: KlingHook) -> None:
    coded = gzip.compress(VIDEO)
    cut = len(coded) // 2

    def half(exchange: Exchange) -> None:  # the whole length announced, half of it sent
        headers = {"Content-Encoding": "gzip", "Content-Length": str(len(coded))}
        exchange.send(response_head(200, headers) + coded[:cut])

    def rest(exchange: Exchange) -> None:
        headers = {
            "Content-Encoding": "gzip",
            "Content-Length": str(len(coded) - cut),
            "Content-Range": f"bytes {cut}-{len(coded) - 1}/{len(coded)}",
        }
        exchange.send(response_head(206, headers) + coded[cut:])

    with HostileServer([half, rest]) as server:
        with hook.stream_result(server.url(), kling_task_id="task-1", retry_delay=0) as result:
            assert result.total is None  # the decoded size is not declared
            assert b"".join(result) == VIDEO
        assert result.attempts == 2
        assert server.requests[1].headers["range"] == f"bytes={cut}-"


def test_a_truncated_gzip_body_without_a_length_is_not_complete(hook: KlingHook) -> None:
    coded = gzip.compress(VIDEO)

    def truncated(exchange: Exchange) -> None:  # close-delimited: no Content-Length, not chunked
        exchange.send(response_head(200, {"Content-Encoding": "gzip", "Connection": "close"}) + coded[:-20])

    with (
        HostileServer([truncated]) as server,
        pytest.raises(KlingResultDownloadError, match="gzip stream ended early"),
    ):
        download(hook, server.url(), max_attempts=2)


def test_a_whole_mp4_without_a_length_is_accepted(hook: KlingHook) -> None:
    def whole(exchange: Exchange) -> None:
        exchange.send(response_head(200, {"Connection": "close"}) + MP4)

    with HostileServer([whole]) as server:
        assert download(hook, server.url()) == MP4


def test_a_truncated_mp4_without_a_length_is_not_stored_as_complete(hook: KlingHook) -> None:
    def truncated(exchange: Exchange) -> None:
        exchange.send(response_head(200, {"Connection": "close"}) + MP4[: len(MP4) - 100])

    with HostileServer([truncated]) as server:
        with pytest.raises(KlingResultDownloadError, match="MP4 file does not"):
            download(hook, server.url(), max_attempts=2)
        assert len(server.requests) == 2
        assert server.requests[1].headers["range"] == f"bytes={len(MP4) - 100}-"


def test_a_truncated_chunked_body_is_resumed(hook: KlingHook) -> None:
    def truncated_chunked(exchange: Exchange) -> None:
        exchange.send(
            response_head(200, {"Transfer-Encoding": "chunked"}) + b"400\r\n" + VIDEO[:1024] + b"\r\n"
        )

    def rest(exchange: Exchange) -> None:
        tail = VIDEO[1024:]
        headers = {
            "Content-Length": str(len(tail)),
            "Content-Range": f"bytes 1024-{len(VIDEO) - 1}/{len(VIDEO)}",
        }
        exchange.send(response_head(206, headers) + tail)

    with HostileServer([truncated_chunked, rest]) as server:
        assert download(hook, server.url()) == VIDEO


def test_more_bytes_than_content_length_is_an_error(hook: KlingHook) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        router.get(RESULT_URL).mock(
            return_value=httpx.Response(200, headers={"Content-Length": "10"}, stream=httpx.ByteStream(VIDEO))
        )
        with pytest.raises(KlingResultDownloadError, match="more than its Content-Length"):
            download(hook, RESULT_URL)


def test_a_garbled_content_length_ends_in_the_error_tree(hook: KlingHook) -> None:
    def garbled(exchange: Exchange) -> None:
        exchange.send(response_head(200, {"Content-Length": "9" * 5000}) + VIDEO)

    with HostileServer([garbled]) as server, pytest.raises(KlingResultDownloadError):
        download(hook, server.url(), max_attempts=2)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
def test_an_unknown_content_coding_is_refused(hook: KlingHook, encoding: str) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        router.get(RESULT_URL).mock(
            return_value=httpx.Response(200, content=VIDEO, headers={"Content-Encoding": encoding})
        )
        with pytest.raises(KlingResultDownloadError, match="Content-Encoding"):
            download(hook, RESULT_URL)


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("ftp://cdn.test/a.mp4", {}, "http"),
        ("not a url", {}, "URL"),
        (RESULT_URL, {"max_bytes": 0}, "max_bytes"),
        (RESULT_URL, {"timeout": float("nan")}, "timeout"),
        (RESULT_URL, {"timeout": float("inf")}, "timeout"),
        (RESULT_URL, {"max_attempts": 0}, "max_attempts"),
    ],
)
def test_arguments_are_checked_before_any_request(
    hook: KlingHook, url: str, options: dict[str, Any], match: str
) -> None:
    with respx.mock(assert_all_mocked=True), pytest.raises(ValueError, match=match):
        hook.stream_result(url, kling_task_id="task-1", **options)


@pytest.mark.parametrize("task_id", ["", "../../escape", "a\nb", "vidéo"])
def test_a_hostile_task_id_is_refused(hook: KlingHook, task_id: str) -> None:
    with pytest.raises(ValueError, match="kling_task_id"):
        hook.stream_result(RESULT_URL, kling_task_id=task_id)


def test_limits_refuse_what_can_never_end() -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        DownloadLimits(read_timeout=float("inf"))
