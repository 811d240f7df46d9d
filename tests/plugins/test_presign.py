"""Presigned URLs of landed videos: signed locally, short-lived, and accepted by a real S3 server."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from airflow_provider_kling.plugins._presign import Presigner, split_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.mark.integration
def test_a_presigned_url_serves_the_object(
    aws_connection: str, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    key = f"{s3_prefix}0.mp4"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"\x00" * 64, ContentType="video/mp4")
    url = Presigner().url(f"s3://{s3_bucket}/{key}", aws_connection)
    assert int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]) == 600
    answer = httpx.get(url, timeout=30)
    assert (answer.status_code, answer.headers["content-type"], len(answer.content)) == (200, "video/mp4", 64)


def test_clients_are_reused_and_lifetimes_bounded() -> None:
    built: list[str | None] = []

    class Client:
        def generate_presigned_url(self, operation: str, *, Params: dict[str, str], ExpiresIn: int) -> str:
            return f"https://signed/{Params['Bucket']}/{Params['Key']}?expires={ExpiresIn}"

    def factory(conn_id: str | None) -> Client:
        built.append(conn_id)
        return Client()

    now = [0.0]
    signer = Presigner(factory, clock=lambda: now[0])
    assert signer.url("s3://b/k.mp4", "aws_x") == "https://signed/b/k.mp4?expires=600"
    signer.url("s3://b/k2.mp4", "aws_x")
    assert built == ["aws_x"]
    now[0] += 301  # the connection is read again after a while (rotated keys)
    signer.url("s3://b/k.mp4", "aws_x")
    assert built == ["aws_x", "aws_x"]
    with pytest.raises(ValueError, match="1 to 900"):
        Presigner(factory, expires_in=3600)
    for bad in ("https://b/k", "s3://b/", "s3:///k"):
        with pytest.raises(ValueError, match="not an s3:// object URI"):
            split_s3_uri(bad)
