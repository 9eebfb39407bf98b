"""Query modality of an upload, checked against the modalities the served index takes."""

from __future__ import annotations

import pytest

from sarbridge.app.serve.backends import GeoBackend, ReidBackend
from sarbridge.app.serve.uploads import UploadError, parse_query_modality


def test_modality_against_the_index() -> None:
    reid, geo = ReidBackend.modalities, GeoBackend.modalities
    assert parse_query_modality(" RGB ", reid) == "optical" and parse_query_modality("sar", reid) == "sar"
    assert parse_query_modality("", geo) == "sar" and parse_query_modality(None, geo) == "sar"
    with pytest.raises(UploadError, match="no modality given") as e:
        parse_query_modality("", reid)
    assert e.value.status == 400
    with pytest.raises(UploadError, match="unknown modality 'ir'"):
        parse_query_modality("ir", reid)
    with pytest.raises(UploadError) as e:
        parse_query_modality("optical", geo, GeoBackend.name)
    assert e.value.message == "a geo (map) index takes SAR queries, not optical ones" and e.value.hint == "choose sar"
