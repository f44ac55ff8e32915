from __future__ import annotations

import base64
import json

import pytest

from collabnet_kit.errors import InvalidArgument
from collabnet_kit.paging import decode_cursor, encode_cursor


def test_a_token_gives_back_the_values_it_was_made_of() -> None:
    assert decode_cursor(encode_cursor("2026-11-22T10:00:00+00:00", "r-1"), 2) == ["2026-11-22T10:00:00+00:00", "r-1"]
    assert decode_cursor("", 2) is None


@pytest.mark.parametrize(
    "values",
    [["only one"], ["a", 1], ["a", "b\u0000"]],
    ids=["wrong-size", "not-a-string", "nul-character"],
)
def test_a_token_this_service_did_not_issue_is_an_invalid_page_token(values: list[object]) -> None:
    forged = base64.urlsafe_b64encode(json.dumps(values).encode()).decode()
    with pytest.raises(InvalidArgument) as refused:
        decode_cursor(forged, 2)
    assert [v.field for v in refused.value.violations] == ["page_token"]
