"""The API key's every path out of the hook (issue 9, defect 7): masked as sent, redacted in every form."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import httpx
import pytest
import respx

from airflow_provider_kling.exceptions import KlingAPIError, KlingAuthError, KlingSubmitUncertainError
from airflow_provider_kling.hooks import kling as kling_module
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest

from ._support import BASE_URL, Sleeps, make_hook, set_connection, status_body

#: A key with the characters servers escape differently (``/`` and ``+``).
SLASHED_KEY = "sk-live/LEAK+check/9c1e5b2d"
REQUEST = KlingVideoRequest.build(
    prompt="A lighthouse at dawn", aspect_ratio="16:9", external_task_id="ext-1"
)


@pytest.fixture
def slashed_hook(monkeypatch: pytest.MonkeyPatch) -> KlingHook:
    set_connection(monkeypatch, "kling_slashed", password=f"  {SLASHED_KEY}  ")
    return make_hook(Sleeps(), "kling_slashed")


def every_form(key: str) -> list[str]:
    lower_hex = re.sub(r"%[0-9A-F]{2}", lambda escape: escape.group().lower(), quote(key, safe=""))
    escaped = key.replace("/", "\\/")
    return [key, escaped, key.replace("/", "\\u002f"), quote(key, safe=""), lower_hex]


def test_the_key_as_sent_is_registered_with_the_secrets_masker(slashed_hook: KlingHook) -> None:
    from airflow.sdk._shared.secrets_masker import redact as airflow_redact

    kling_module._masked_key_forms.discard(SLASHED_KEY)  # as in a fresh process
    assert slashed_hook.settings.api_key == SLASHED_KEY  # the whitespace around the password is dropped
    text = f"echo {SLASHED_KEY} and {json.dumps(SLASHED_KEY)[1:-1]} and {quote(SLASHED_KEY, safe='')}"
    masked = airflow_redact(text)
    assert SLASHED_KEY not in masked
    assert json.dumps(SLASHED_KEY)[1:-1] not in masked
    assert quote(SLASHED_KEY, safe="") not in masked


async def test_the_async_path_registers_the_key_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk._shared.secrets_masker import redact as airflow_redact

    key = "sk-async/LEAK+5d1c7a9e"
    set_connection(monkeypatch, "kling_async_masked", password=key)
    await KlingHook("kling_async_masked").aget_settings()
    assert key not in airflow_redact(f"echo {key}")


@pytest.mark.parametrize("form", range(5))
def test_an_echoed_key_in_any_form_never_reaches_an_error(slashed_hook: KlingHook, form: int) -> None:
    echoed = every_form(SLASHED_KEY)[form]
    body = f'{{"error": {{"message": "bad key {echoed}", "code": "{echoed}"}}, "request_id": "{echoed}"}}'
    with respx.mock(base_url=BASE_URL) as api:
        api.get("/v1/tasks/status").mock(
            return_value=httpx.Response(401, text=body, headers={"X-Request-Id": echoed})
        )
        with pytest.raises(KlingAuthError) as info:
            slashed_hook.get_task("task-1")
    texts = [str(info.value), repr(info.value), *(str(value) for value in vars(info.value).values())]
    for text in texts:
        for leaked in every_form(SLASHED_KEY):
            assert leaked not in text


def test_an_api_redirect_is_never_followed_with_the_key(hook: KlingHook, api: respx.MockRouter) -> None:
    api.get("/v1/tasks/status").mock(
        return_value=httpx.Response(302, headers={"Location": f"{BASE_URL}/v2/steal"})
    )
    stolen = api.get("/v2/steal").mock(return_value=httpx.Response(200, json=status_body()))
    api.post("/v1/tasks/submit").mock(
        return_value=httpx.Response(307, headers={"Location": "https://evil.test/"})
    )
    with pytest.raises(KlingAPIError):
        hook.get_task("task-1")
    with pytest.raises(KlingSubmitUncertainError):
        hook.submit_task(REQUEST)  # a redirect does not prove that nothing was created
    assert stolen.call_count == 0


@pytest.mark.parametrize("path", ["/%2e%2e/other/1.mp4", "/./x/../../y.mp4", "/%2E%2E%2Fother"])
def test_the_key_never_goes_outside_the_api_path_prefix(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    set_connection(monkeypatch, "kling_prefixed", host="https://proxy.test/modelverse")
    hook = make_hook(Sleeps(), "kling_prefixed")
    url = f"https://proxy.test/modelverse{path}"
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get(url__startswith="https://proxy.test/").mock(
            return_value=httpx.Response(200, content=b"v")
        )
        with hook.stream_result(url, kling_task_id="task-1") as result:
            b"".join(result)
    assert "Authorization" not in route.calls.last.request.headers


def test_a_uri_connection_keeps_its_path_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KLING_URI", "kling://:sk-uri-key@proxy.test:8443/modelverse%2Fapi")
    hook = make_hook(Sleeps(), "kling_uri")
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get("https://proxy.test:8443/modelverse/api/v1/tasks/status").mock(
            return_value=httpx.Response(200, json=status_body())
        )
        hook.get_task("task-1")
    assert route.call_count == 1
    assert route.calls.last.request.headers["Authorization"] == "sk-uri-key"
