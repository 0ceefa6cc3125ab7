"""strict_json.py: the JSON hooks both readers of outside JSON use (a row's params in
templates.py, a push body in web/push_events.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from strict_json import DuplicateKey, no_constants, unique_keys


def _loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constants)


def test_an_object_naming_a_key_twice_is_refused_at_any_depth() -> None:
    for text, key in (('{"a": 1, "a": 2}', "a"), ('[{"x": {"k": 1, "k": 1}}]', "k"),
                      ('{"a": {"b": 1}, "a": {"b": 1}}', "a")):
        with pytest.raises(DuplicateKey) as caught:
            _loads(text)
        assert caught.value.key == key


def test_equal_keys_in_different_objects_are_fine_and_order_is_kept() -> None:
    assert _loads('{"b": {"a": 1}, "a": {"a": 2}}') == {"b": {"a": 1}, "a": {"a": 2}}
    assert list(_loads('{"z": 1, "y": 2}')) == ["z", "y"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant: str) -> None:
    with pytest.raises(ValueError, match=f"{constant} is not JSON"):
        _loads(f'[1, {constant}]')
