"""
The transfer's module layout: the operator module keeps the multipart engine off a DAG file's parse path
and still serves the engine's public names (issue 14).
"""

from __future__ import annotations

import pytest
from _imports import modules_after

import airflow_provider_kling.transfers.kling_to_s3 as kling_to_s3
from airflow_provider_kling.transfers import _multipart, _s3_objects

ENGINE_MODULE = "airflow_provider_kling.transfers._multipart"


def test_importing_the_operator_does_not_import_the_engine_or_boto() -> None:
    loaded = modules_after("import airflow_provider_kling.transfers.kling_to_s3")

    assert ENGINE_MODULE not in loaded
    assert sorted(name for name in loaded if name.split(".")[0] in ("boto3", "botocore")) == []


def test_asking_for_an_engine_name_imports_the_engine() -> None:
    loaded = modules_after("from airflow_provider_kling.transfers.kling_to_s3 import S3StreamUploader")

    assert ENGINE_MODULE in loaded


@pytest.mark.parametrize("name", kling_to_s3.__all__)
def test_every_public_name_is_served_by_the_operator_module(name: str) -> None:
    value = getattr(kling_to_s3, name)

    for home in (_multipart, _s3_objects):
        if name in home.__all__:
            assert value is getattr(home, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        kling_to_s3.no_such_name  # noqa: B018
