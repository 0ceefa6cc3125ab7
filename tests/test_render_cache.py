"""Rows that share a template and a params text render once (templates/render.py): the
cache must never change what a row sends. Each row keeps its own recipient, an edited
template is never served from the old one's entry, a channel's build cannot spoil the
entry for the next row, and bad params fail every row that carries them."""

from __future__ import annotations

from pathlib import Path

import pytest

import templates.render as templates
from keywords import KeywordError, check_value
from templates import RenderError, parse_templates, render_row

YAML = """\
order_status:
  template_id: T1
  params: [goods_name, goods_price, order_status, remark]
  data:
    thing2: "{{ goods_name }}"
    amount3: "{unit}{{ goods_price }}"
    thing11: "{{ order_status }}"
    thing5: "{{ remark }}"
"""
PARAMS = '["Tea", 12.5, "shipped", "ok"]'


def _set(unit: str = "¥"):
    return parse_templates(YAML.replace("{unit}", unit), Path("templates.yaml"))


def _render(tset, openid: str, params: str = PARAMS):
    return render_row(tset, template="order_status", openid=openid, params=params)


def test_rows_sharing_params_each_keep_their_recipient():
    tset = _set()
    bodies = [_render(tset, f"o{i}").body for i in range(3)]
    assert [b["touser"] for b in bodies] == ["o0", "o1", "o2"]
    for b in bodies:
        assert b["data"] == {"thing2": {"value": "Tea"}, "amount3": {"value": "¥12.5"},
                             "thing11": {"value": "shipped"}, "thing5": {"value": "ok"}}


def test_an_edited_template_renders_anew_over_the_same_params():
    assert _render(_set("¥"), "o1").body["data"]["amount3"] == {"value": "¥12.5"}
    assert _render(_set("$"), "o1").body["data"]["amount3"] == {"value": "$12.5"}


def test_a_build_that_changes_its_data_does_not_change_the_next_rows(monkeypatch):
    tset = _set()
    kind = tset.templates["order_status"].kind
    real = kind.build.__func__  # type: ignore[attr-defined]

    def spoiling(cls, tpl, data, row, app):
        built = real(cls, tpl, data, row, app)
        data["thing2"] = "spoiled"
        return built

    monkeypatch.setattr(kind, "build", classmethod(spoiling))
    first = _render(tset, "o1").body["data"]["thing2"]
    second = _render(tset, "o2").body["data"]["thing2"]
    assert first == second == {"value": "Tea"}


def test_bad_params_fail_every_row_that_carries_them():
    tset = _set()
    for openid in ("o1", "o2"):
        with pytest.raises(RenderError, match="null"):
            _render(tset, openid, '["Tea", null, "shipped", "ok"]')
        with pytest.raises(RenderError, match="missing"):
            _render(tset, openid, '["Tea"]')


def test_the_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(templates, "RENDER_CACHE_MAX", 5)
    tset = _set()
    for i in range(12):
        _render(tset, "o1", f'["Tea {i}", 1, "shipped", "ok"]')
        assert len(templates._RENDERED) <= 5
    long = '["' + "x" * templates.RENDER_CACHE_PARAMS + '", 1, "s", "ok"]'
    with pytest.raises(RenderError):  # too long for a thing: refused, and not kept
        _render(tset, "o1", long)
    assert all(len(k[1]) <= templates.RENDER_CACHE_PARAMS for k in templates._RENDERED)


def test_a_remembered_check_still_refuses_and_still_cuts():
    for _ in range(2):
        with pytest.raises(KeywordError):
            check_value("number1", "12a")
        assert check_value("thing1", "x" * 25) == ("x" * 20, True)
        assert check_value("thing1", " Tea ") == ("Tea", False)


def test_an_entry_left_by_another_template_under_the_same_id_is_not_served():
    """A template freed after a reload may leave its id to a new one: the entry names the
    template it was made from, and only that one may use it."""
    old, new = _set("¥"), _set("$")
    tpl = new.templates["order_status"]
    old_data = templates._rendered(old.templates["order_status"], PARAMS)
    templates._RENDERED[(id(tpl), PARAMS)] = (old.templates["order_status"], old_data)
    assert _render(new, "o1").body["data"]["amount3"] == {"value": "$12.5"}
