"""templates.yaml validation of each new channel's keys: every problem names the
template, the key and what is allowed; a secret never appears in a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from templates import LoadContext, TemplateError, load_templates
from tests.channel_support import OA_APPID, overrides, write_templates
from tests.conftest import make_config


def config(tmp_path: Path, **more):
    return make_config("sqlite:///x.db", "http://127.0.0.1:9", tmp_path,
                       **overrides(write_templates(tmp_path), **more))


def problems(tmp_path: Path, text: str, cfg=None, env=None) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TemplateError) as err:
        load_templates(path, context=LoadContext(config=cfg, base_dir=tmp_path,
                                                 env=env or {}))
    return str(err.value)


def loads(tmp_path: Path, text: str, cfg=None, env=None):
    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    return load_templates(path, context=LoadContext(config=cfg, base_dir=tmp_path,
                                                    env=env or {}))


UNIFORM = f"""
u:
  channel: uniform
  oa_appid: {OA_APPID}
  template_id: T
  data: {{thing2: x}}
"""


@pytest.mark.parametrize(("edit", "message"), [
    (("  oa_appid: " + OA_APPID + "\n", ""), "u.oa_appid: required"),
    (("oa_appid: " + OA_APPID, "oa_appid: wx123"), "'wx123' is not an appid"),
    (("  template_id: T\n", "  template_id: T\n  url: ftp://x.example/\n"),
     "u.url: 'ftp://x.example/' must start with http:// or https://"),
    (("  template_id: T\n", "  template_id: T\n  url: not a url\n"),
     "u.url: must not contain spaces"),
    (("  template_id: T\n", "  template_id: T\n  url: https://u:p@x.example/\n"),
     "must not carry a user name or password"),
    (("  template_id: T\n", "  template_id: T\n  page: ''\n"), "u.page:"),
    (("  template_id: T\n", ""), "u.template_id: required"),
    (("  template_id: T\n", "  template_id: T\n  miniprogram_state: trial\n"),
     "u.miniprogram_state: unknown key for a uniform template"),
    (("{thing2: x}", "{'bad key': x}"), "is not a template keyword"),
])
def test_uniform_keys(tmp_path, edit, message):
    assert message in problems(tmp_path, UNIFORM.replace(*edit))


def test_uniform_app_must_be_a_mini_program_when_the_config_is_known(tmp_path):
    text = UNIFORM.replace("  template_id: T\n", "  template_id: T\n  app: shop_oa\n")
    assert "u.app: 'shop_oa' is an official_account" in problems(tmp_path, text,
                                                                 config(tmp_path))
    loads(tmp_path, text)  # without the config, dispatch checks the row's app instead


OA = """
o:
  channel: oa_template
  app: shop_oa
  template_id: T
  data: {first: x, keyword1: y, remark: z}
"""


@pytest.mark.parametrize(("edit", "message"), [
    (("  app: shop_oa\n", ""), "o.app: required: the official_account app"),
    (("  template_id: T\n", "  template_id: T\n  page: pages/a\n"),
     "o.page: opens a mini program: name it with miniprogram_app"),
    (("  template_id: T\n", "  template_id: T\n  url: //no-scheme.example\n"),
     "must start with http:// or https://"),
    (("  template_id: T\n", "  template_id: T\n  oa_appid: wx1111111111111111\n"),
     "o.oa_appid: unknown key for a oa_template template"),
])
def test_oa_template_keys(tmp_path, edit, message):
    assert message in problems(tmp_path, OA.replace(*edit))


def test_oa_template_apps_must_be_of_the_right_kind(tmp_path):
    cfg = config(tmp_path)
    mini = OA.replace("  app: shop_oa\n", "  app: default\n")
    assert "o.app: 'default' is a miniprogram" in problems(tmp_path, mini, cfg)
    card = OA.replace("  template_id: T\n", "  template_id: T\n  miniprogram_app: shop_oa\n")
    assert "o.miniprogram_app: 'shop_oa' is an official_account" in problems(tmp_path, card,
                                                                             cfg)
    good = OA.replace("  template_id: T\n",
                      "  template_id: T\n  miniprogram_app: default\n  page: pages/a\n")
    tpl = loads(tmp_path, good, cfg).templates["o"]
    assert tpl.settings["miniprogram_appid"] == cfg.apps["default"].appid


SMS = """
s:
  channel: sms
  template_id: 1234567
  data: ["{{ a }}", "{{ b }}"]
"""


def test_an_sms_template_id_may_be_a_yaml_number(tmp_path):
    tpl = loads(tmp_path, SMS).templates["s"]
    assert tpl.template_id == "1234567" and tpl.data_is_list


@pytest.mark.parametrize(("edit", "message"), [
    (('data: ["{{ a }}", "{{ b }}"]', "data: {a: x}"),
     "s.data: required, a list of values (a sms template's parameters, in order)"),
    (("template_id: 1234567", "template_id: SMS_1"), "s.template_id: 'SMS_1' must be the "
                                                     "approved SMS template's number"),
    (("  template_id: 1234567\n", ""), "s.template_id: required"),
    (("  template_id: 1234567\n", "  template_id: 1234567\n  sign_name: \"\"\n"),
     "s.sign_name: must be an approved sign name"),
    (("  template_id: 1234567\n", "  template_id: 1234567\n  sign_name: \"a\\nb\"\n"),
     "s.sign_name: must be an approved sign name"),
    (('"{{ b }}"', '"a constant far over twelve characters"'),
     "s.data.1: template parameter has 37 characters; Tencent allows at most 12"),
    (("  template_id: 1234567\n", "  template_id: 1234567\n  param_max_chars: 0\n"),
     "s.param_max_chars: must be a whole number from 1 to 500"),
    (("  template_id: 1234567\n", "  template_id: 1234567\n  url: https://x.example\n"),
     "s.url: unknown key for a sms template"),
])
def test_sms_keys(tmp_path, edit, message):
    assert message in problems(tmp_path, SMS.replace(*edit))


def test_sms_needs_the_sms_section_when_the_config_is_known(tmp_path):
    text = problems(tmp_path, SMS, config(tmp_path, sms=None))
    assert "s.channel: SMS is not configured: config.yaml has no sms section" in text
    loads(tmp_path, SMS, config(tmp_path))  # with the section: fine


def test_sms_param_max_chars_raises_the_limit(tmp_path):
    text = SMS.replace("  template_id: 1234567\n",
                       "  template_id: 1234567\n  param_max_chars: 40\n").replace(
        '"{{ b }}"', '"a constant far over twelve characters"')
    assert loads(tmp_path, text).templates["s"].settings["param_max_chars"] == 40


HOOK = """
h:
  channel: webhook
  url: https://app.example/hook
  secret: 0123456789abcdef-secret
  data: {title: "{{ t }}"}
"""


@pytest.mark.parametrize(("edit", "message"), [
    (("  secret: 0123456789abcdef-secret\n", ""), "h.secret: give exactly one of secret"),
    (("  secret: 0123456789abcdef-secret\n",
      "  secret: 0123456789abcdef-secret\n  secret_file: f\n"),
     "h.secret: give exactly one of secret"),
    (("0123456789abcdef-secret", "short"), "h.secret: the secret is 5 characters; use at "
                                           "least 16"),
    (("0123456789abcdef-secret", "${UNSET_VAR}"),
     "h.secret: environment variable UNSET_VAR is not set"),
    (("0123456789abcdef-secret", "[1, 2]"), "h.secret: must be text"),
    (("  secret: 0123456789abcdef-secret\n", "  secret_file: nowhere\n"),
     "h.secret_file: not found (looked for"),
    (("  url: https://app.example/hook\n", ""), "h.url: required"),
    (("https://app.example/hook", "app.example/hook"), "h.url: 'app.example/hook' must start "
                                                       "with http:// or https://"),
    (("https://app.example/hook", "http://x.example:0/"), "names port 0"),
    (("https://app.example/hook", "http://x.example:99999/"), "is not a URL"),
    (("  url: https://app.example/hook\n", "  url: https://app.example/hook\n  page: p\n"),
     "h.page: unknown key for a webhook template"),
    (('data: {title: "{{ t }}"}', 'data: ["{{ t }}"]'), "h.data: required, a mapping"),
])
def test_webhook_keys(tmp_path, edit, message):
    text = problems(tmp_path, HOOK.replace(*edit))
    assert message in text
    assert "0123456789abcdef-secret" not in text


def test_a_webhook_needs_no_template_id(tmp_path):
    tpl = loads(tmp_path, HOOK).templates["h"]
    assert tpl.template_id is None and tpl.settings["url"] == "https://app.example/hook"


def test_a_short_secret_from_a_file_is_refused_without_quoting_it(tmp_path):
    (tmp_path / "s").write_text("tiny-secret\n")
    text = problems(tmp_path, HOOK.replace("  secret: 0123456789abcdef-secret\n",
                                           "  secret_file: s\n"))
    assert "h.secret_file: the secret is 11 characters" in text and "tiny-secret" not in text


def test_problems_name_the_line_of_the_key(tmp_path):
    text = problems(tmp_path, UNIFORM.replace("oa_appid: " + OA_APPID, "oa_appid: nope"))
    assert "t.yaml:4: u.oa_appid:" in text


# -- the operator's verbs load templates with the config, as the daemon does ---------------

def test_check_and_render_see_the_channels(tmp_path):
    import json

    from tests.channel_support import sms_config
    from tests.support import write_config
    from tests.test_cli import cli

    templates = write_templates(tmp_path)
    apps = {"shop_oa": {"appid": OA_APPID, "secret": "oa-secret", "kind": "official_account"}}
    bare = write_config(tmp_path, name="no_sms.yaml", templates=str(templates), apps=apps)
    res = cli("--config", str(bare), "check")
    assert res.returncode == 2 and "order_sms.channel: SMS is not configured" in res.stderr
    good = write_config(tmp_path, templates=str(templates), apps=apps,
                        sms=sms_config("http://127.0.0.1:9"))
    assert cli("--config", str(good), "check").returncode == 0
    res = cli("--config", str(good), "render", "--template", "order_uniform", "--openid",
              "oU", "--params", '["Tea", 3, "shipped", "ok"]')
    assert res.returncode == 0, res.stderr
    head = res.stdout.split("\n", 1)[0]
    body = res.stdout[res.stdout.index("\n{") + 1:]  # the request body, after the heading
    assert head == ("POST http://127.0.0.1:9/cgi-bin/message/wxopen/template/uniform_send"
                    "?access_token=<token of app default>")
    from tests.support import APPID

    assert json.loads(body)["mp_template_msg"]["miniprogram"]["appid"] == APPID
    res = cli("--config", str(good), "render", "--template", "order_hook", "--openid", "oU",
              "--params", '["Tea", 3, "shipped", "ok"]')
    assert res.stdout.startswith("POST http://127.0.0.1:9/hook\n")
    assert "hook-secret" not in res.stdout
