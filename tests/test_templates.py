"""templates.yaml validation and rendering, without a database or server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from templates import RenderError, TemplateError, TemplateHolder, load_templates, parse_templates

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tset():
    return load_templates(ROOT / "templates.yaml")


def render(tset, template="order_status", openid="o1", params='["Tea", 12.5, "shipped", "ok"]',
           **kw):
    from templates import render_row

    return render_row(tset, template=template, openid=openid, params=params, **kw)


def test_shipped_templates_are_the_tutorials_two(tset):
    assert set(tset.templates) == {"vip_pay_success", "order_status"}
    order = tset.templates["order_status"]
    assert order.template_id == "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc"
    assert order.params == ("goods_name", "goods_price", "order_status", "remark")


def test_positional_params_render_every_field(tset):
    req = render(tset)
    assert req.body == {
        "touser": "o1",
        "template_id": "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc",
        "page": "pages/order/detail",
        "data": {"thing2": {"value": "Tea"}, "amount3": {"value": "12.5元"},
                 "thing11": {"value": "shipped"}, "thing5": {"value": "ok"}},
        "miniprogram_state": "formal",
        "lang": "zh_CN",
    }
    assert req.truncated == ()


def test_named_params_and_page_override(tset):
    params = json.dumps({"member_type": "Gold", "amount": "199", "paid_at": "2026-11-28 10:30",
                         "tip": "thanks"})
    req = render(tset, template="vip_pay_success", params=params, page="pages/x?id=1")
    assert req.body["page"] == "pages/x?id=1"
    assert req.body["data"]["amount2"] == {"value": "199元"}
    assert req.body["data"]["time3"] == {"value": "2026-11-28 10:30"}


def test_raw_template_id_finds_its_template(tset):
    req = render(tset, template="zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc")
    assert req.template.name == "order_status"


def test_over_long_thing_is_truncated_in_code_points(tset):
    name = "超长的商品名称" * 4  # 28 code points
    req = render(tset, params=json.dumps([name, 1, "shipped", "ok"]))
    assert req.body["data"]["thing2"]["value"] == name[:20]
    assert req.truncated == ("thing2",)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"template": "nope"}, "unknown template 'nope'"),
        ({"template": ""}, "template is empty"),
        ({"template": None}, "template is empty"),
        ({"openid": ""}, "openid is empty"),
        ({"openid": None}, "openid is empty"),
        ({"params": "not json"}, "params is not valid JSON"),
        ({"params": "42"}, "params must be a JSON array or object, got a number"),
        ({"params": '"text"'}, "params must be a JSON array or object, got a string"),
        ({"params": '["Tea", 1, "x"]'}, "missing remark"),
        ({"params": '["Tea", 1, "x", "y", "z"]'}, "takes 4"),
        ({"params": '["Tea", "twelve", "x", "y"]'}, "amount3: 'twelve元' is not a valid amount"),
        ({"params": '{"goods_name": "Tea"}'}, "'goods_price' is undefined"),
        ({"params": '["Tea", null, "x", "y"]'}, "param 'goods_price' is null"),
        ({"params": "[" + '"a",' * 40000 + '"a"]'}, "over the 64 KiB limit"),
    ],
)
def test_bad_rows_give_a_reason(tset, kw, reason):
    with pytest.raises(RenderError) as info:
        render(tset, row_id=7, **kw)
    assert reason in info.value.reason
    assert info.value.row_id == 7  # the exception carries the row and the template
    assert "row 7" in str(info.value)


def test_row_content_is_data_not_template_code(tset):
    req = render(tset, params=json.dumps(["{{ 7*7 }}", 1, "x", "y"]))
    assert req.body["data"]["thing2"]["value"] == "{{ 7*7 }}"


def test_sandbox_refuses_unsafe_expressions(tmp_path):
    # refused when the file loads now (the expression subset), not when a row renders
    path = tmp_path / "t.yaml"
    path.write_text("evil:\n  template_id: T1\n  data:\n"
                    "    thing1: \"{{ ''.__class__.__mro__ }}\"\n")
    with pytest.raises(TemplateError, match="attributes starting with _ are not allowed"):
        load_templates(path)


BAD_TEMPLATES = [
    ("a:\n  data: {thing1: x}\n", "a.template_id: required"),
    ("a:\n  template_id: T\n  data: {foo1: x}\n", "does not name a keyword type"),
    ("a:\n  template_id: T\n  params: [x, x]\n  data: {thing1: '{{ x }}'}\n", "repeated names x"),
    ("a:\n  template_id: T\n  data: {thing1: '{{ x '}\n", "bad expression"),
    ("a:\n  template_id: T\n  params: [x]\n  data: {thing1: '{{ y }}'}\n", "uses y, not in params"),
    ("a:\n  template_id: T\n  lang: fr\n  data: {thing1: x}\n", "'fr' is not allowed"),
    ("a:\n  template_id: T\n  colour: red\n  data: {thing1: x}\n", "a.colour: unknown key"),
    ("a:\n  template_id: T\n  data: {thing1: x\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TEMPLATES)
def test_invalid_templates_name_the_problem_and_line(tmp_path, text, message):
    with pytest.raises(TemplateError) as info:
        parse_templates(text, tmp_path / "templates.yaml")
    assert message in str(info.value)
    assert "templates.yaml:" in str(info.value)  # file and line


def test_line_numbers_point_at_the_broken_template(tmp_path):
    text = ("good:\n  template_id: A\n  data: {thing1: x}\n"
            "bad:\n  template_id: B\n  lang: xx\n  data: {thing1: x}\n")
    with pytest.raises(TemplateError) as info:
        parse_templates(text, tmp_path / "templates.yaml")
    assert "templates.yaml:6:" in str(info.value)


def test_broken_edit_keeps_last_good_set(tmp_path, caplog):
    path = tmp_path / "templates.yaml"
    path.write_text((ROOT / "templates.yaml").read_text())
    holder = TemplateHolder(path)
    path.write_text("order_status:\n  template_id: X\n  data: {nonsense: 1}\n")
    assert holder.reload() is False
    assert set(holder.current.templates) == {"vip_pay_success", "order_status"}
    assert "keeping the last good set" in caplog.text
    path.write_text("only:\n  template_id: X\n  data: {thing1: hi}\n")
    assert holder.reload() is True
    assert set(holder.current.templates) == {"only"}


def test_reload_if_changed_uses_mtime(tmp_path):
    import os

    path = tmp_path / "templates.yaml"
    path.write_text("a:\n  template_id: A\n  data: {thing1: hi}\n")
    holder = TemplateHolder(path)
    assert holder.reload_if_changed() is None
    path.write_text("b:\n  template_id: B\n  data: {thing1: hi}\n")
    os.utime(path, (1, 1))  # a different mtime even within the same second
    assert holder.reload_if_changed() is True
    assert set(holder.current.templates) == {"b"}


@pytest.mark.parametrize(
    ("expr", "params"),
    [
        ("{{ a }}", {"a": "x"}),
        ("{{a}}元", {"a": 12.5}),
        ("Order {{ a }}: {{ b }} items", {"a": 7, "b": [1, 2]}),
        ("no variables at all", {}),
        ("{{ a | upper }}", {"a": "shout"}),  # a filter: goes through Jinja
        ("{{ a ~ '!' }}", {"a": True}),
    ],
)
def test_the_fast_path_renders_exactly_what_jinja_renders(tmp_path, expr, params):
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    from templates.expressions import _join, _simple_plan

    expected = SandboxedEnvironment(undefined=StrictUndefined).from_string(expr).render(params)
    plan = _simple_plan(expr)
    if "|" in expr or "~" in expr:
        assert plan is None
    else:
        assert plan is not None and _join(plan, params) == expected


def test_fast_path_missing_param_reads_like_jinjas(tset):
    with pytest.raises(RenderError) as info:
        render(tset, params='{"goods_name": "Tea"}')
    assert "'goods_price' is undefined" in info.value.reason


def test_a_template_without_params_accepts_the_default_empty_array(tmp_path):
    from templates import render_row

    path = tmp_path / "t.yaml"
    path.write_text("closed:\n  template_id: T1\n  data: {thing1: Closed today}\n")
    req = render_row(load_templates(path), template="closed", openid="o", params="[]")
    assert req.body["data"] == {"thing1": {"value": "Closed today"}}
    with pytest.raises(RenderError, match="declares no params names"):
        render_row(load_templates(path), template="closed", openid="o", params='["x"]')
