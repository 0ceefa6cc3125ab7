"""check --connect (database, schema, one token per app), check --remote and templates pull
against the sandbox's template list, and templates.yaml errors at their key's own line."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from db.models import MsgList
from db.schema import VERSION
from jobs import dispatch
from sandbox.wechat import Sandbox
from templates import load_templates
from tests.bound import connect
from tests.conftest import SERVER_URLS, database_url
from tests.support import APPID, SECRET, write_config
from tests.verbs_support import herald, herald_child, queued


def missing_db_url(dialect: str) -> str:
    """The test server with a database name nobody created (never created or dropped)."""
    url = SERVER_URLS[dialect]
    if not url:
        pytest.skip(f"{dialect}: set HERALD_TEST_{dialect.upper()}_URL to run")
    base, name = url.rsplit("/", 1)
    return f"{base}/{name.split('?')[0]}_missing"


# ----------------------------------------------------------------- --connect


def test_check_connect_on_a_missing_postgres_database(tmp_path, capsys, sandbox):
    url = missing_db_url("postgres")
    name = url.rsplit("/", 1)[1]
    cfg = str(write_config(tmp_path, database=url, api_base=sandbox.url))
    ran = herald(capsys, "check", "--connect", "--config", cfg)
    assert ran.code == 1, ran.text
    assert f"problem: database {url}: database \"{name}\" does not exist (create it, e.g. " \
           "createdb, or fix the name in `database`)" in ran.err
    assert "database  FAILED" in ran.out
    assert "app default  ok: stable_token answered a token valid for 2 h" in ran.out
    assert "Traceback" not in ran.text and "\tIs the server" not in ran.text


def test_check_connect_on_a_missing_mysql_database(tmp_path, capsys, sandbox):
    url = missing_db_url("mysql")
    cfg = str(write_config(tmp_path, database=url, api_base=sandbox.url))
    ran = herald(capsys, "check", "--connect", "--config", cfg)
    assert ran.code == 1, ran.text
    assert f"problem: database {url}: the database does not exist (create it, e.g. CREATE " \
           "DATABASE herald) (1049: Unknown database" in ran.err


def test_check_connect_on_a_good_postgres_database(tmp_path, capsys, sandbox):
    url = database_url("postgres", tmp_path)  # Herald's tables dropped: a fresh database
    cfg = str(write_config(tmp_path, database=url, api_base=sandbox.url, apps={
        "default": {"appid": APPID, "secret": SECRET},
        "old": {"appid": APPID, "secret": SECRET, "token_source": "legacy"}}))
    ran = herald(capsys, "check", "--connect", "--config", cfg)
    # before the first start: not a failure; it says what init-db will create, and who
    assert ran.code == 0, ran.text
    assert f"database  reachable, no Herald tables yet: {url}" in ran.out
    assert re.search(rf"init-db will create \d+ tables at schema version {VERSION}: "
                     r"msg_list, access_token, .*herald_schema", ran.out), ran.out
    assert "with an account that may create tables" in ran.out
    assert herald(capsys, "init-db", "--config", cfg).code == 0
    ran = herald(capsys, "check", "--connect", "--config", cfg)
    assert ran.code == 0, ran.text
    assert f"database  ok: {url}, schema version {VERSION} (current)" in ran.out
    assert re.search(r"app default  ok: stable_token answered a token valid for "
                     r"(2 h|1 h 59 min)\n", ran.out)
    assert "app old      ok: fetched from /cgi-bin/token and stored, valid for 1 h 59 min" \
        in ran.out
    again = herald(capsys, "check", "--connect", "--config", cfg)
    # a legacy fetch would replace the token the daemons use: the stored one is read
    assert "app old      ok: the shared token in access_token" in again.out
    assert sandbox.token_calls["legacy"] == 1  # (and one stable call per check)
    assert SECRET not in ran.text + again.text


def test_check_connect_names_the_app_and_the_errcode_meaning(tmp_path, capsys, sandbox):
    cfg = str(write_config(tmp_path, api_base=sandbox.url, secret="not-the-secret"))
    herald(capsys, "init-db", "--config", cfg)
    ran = herald(capsys, "check", "--connect", "--config", cfg)
    assert ran.code == 2, ran.text  # WeChat refused the credentials: fix the config
    assert "app default  FAILED: stable_token: 40125 invalid app secret" in ran.out
    assert "problem: app default: no access token: stable_token: 40125 invalid app secret" \
        in ran.err
    assert "not-the-secret" not in ran.text


def test_check_connect_unreachable_things_exit_1(tmp_path, capsys):
    cfg = str(write_config(tmp_path, api_base="http://127.0.0.1:9",
                           database="postgresql://herald@127.0.0.1:9/herald"))
    ran = herald(capsys, "check", "--connect", "--config", cfg)
    assert ran.code == 1, ran.text
    assert "problem: database postgresql://herald@127.0.0.1:9/herald: connection refused: " \
           "is the server running on that host and port?" in ran.err
    assert "problem: app default: no access token: stable_token: connection to WeChat " \
           "failed: connection refused (127.0.0.1:9)" in ran.err


def test_check_connect_on_a_missing_sqlite_file_creates_nothing(tmp_path, capsys, sandbox):
    """Before the first start the file is absent: check --connect says so, what init-db
    will create and who should run it (the owner of the folder: the daemon's user), and
    carries on with the tokens instead of failing."""
    import pwd

    cfg = str(write_config(tmp_path, api_base=sandbox.url))
    ran = herald(capsys, "check", "--connect", "--config", cfg)
    assert ran.code == 0, ran.text
    assert f"database  not created yet: {tmp_path}/herald.db does not exist" in ran.out
    assert re.search(rf"init-db will create \d+ tables at schema version {VERSION}: "
                     r"msg_list, access_token, .*herald_schema", ran.out), ran.out
    owner = pwd.getpwuid(tmp_path.stat().st_uid).pw_name
    assert f"run it as the user the daemon runs as (the owner of {tmp_path}: {owner})" \
        in ran.out
    assert "sudo -u herald .venv/bin/herald init-db" in ran.out
    assert "app default  ok" in ran.out  # the tokens are still checked
    assert not (tmp_path / "herald.db").exists()
    # a folder not made yet: never the owner of a folder above it (/var/lib is root's)
    cfg = str(write_config(tmp_path, api_base=sandbox.url,
                           database=f"sqlite:///{tmp_path}/state/herald.db"))
    ran = herald(capsys, "check", "--connect", "--config", cfg)
    assert ran.code == 0, ran.text
    assert "run it as the user the daemon runs as, so the file is theirs" in ran.out
    assert f"the folder {tmp_path}/state does not exist yet: systemd makes it" in ran.out
    assert f"install -d -o herald -g herald -m 0700 {tmp_path}/state" in ran.out
    assert not (tmp_path / "state").exists()


def test_plain_check_reads_only_files(tmp_path, capsys):
    cfg = str(write_config(tmp_path, database="postgresql://x@127.0.0.1:9/nope"))
    ran = herald(capsys, "check", "--config", cfg)
    assert ran.code == 0 and "config ok" in ran.out


# ----------------------------------------------------------------- --remote and pull


TEMPLATES = """\
ok_tpl:
  template_id: TPL_OK
  params: [name, at]
  data:
    thing1: "{{ name }}"
    time2: "{{ at }}"

missing_key:
  template_id: TPL_MISS
  data:
    thing1: "{{ name }}"

extra_key:
  template_id: TPL_EXTRA
  data:
    thing1: "{{ name }}"
    thing3: "{{ name }}"

enum_bad:
  template_id: TPL_ENUM
  data:
    thing1: "{{ name }}"
    enum4: "{{ state }}"
  enums:
    enum4: [待发货, 已签收]

gone:
  template_id: TPL_GONE0
  data:
    thing1: "{{ name }}"
"""


def line_of(text: str, needle: str, after: str = "") -> int:
    start = text.index(after) if after else 0
    return text[:text.index(needle, start)].count("\n") + 1


@pytest.fixture
def wechat():
    """A sandbox whose template list has a match, a missing key, an extra key, an enum
    list, one id templates.yaml gets wrong, and two templates the file lacks."""
    with Sandbox(apps={APPID: SECRET}) as sb:
        sb.add_template("TPL_OK", {"thing1": "商品名称", "time2": "下单时间"}, title="下单成功")
        sb.add_template("TPL_MISS", {"thing1": "商品", "thing2": "数量"}, title="缺少")
        sb.add_template("TPL_EXTRA", {"thing1": "商品"}, title="多余")
        sb.add_template("TPL_ENUM", {"thing1": "商品", "enum4": "状态"}, title="枚举",
                        enums={"enum4": ["待发货", "已发货"]})
        sb.add_template("TPL_GONE1", {"thing1": "商品"}, title="另一个")
        sb.add_template("TPL_NEW", {"thing2": "商品名称", "amount3": "金额", "phrase4": "状态",
                                    "enum5": "物流"}, title="订单发货提醒", long_term=True,
                        enums={"enum5": ["运输中", "已签收"]},
                        example="商品名称:可口可乐\n金额:3元\n状态:已发货\n物流:运输中")
        sb.add_template("TPL_NEW_EN", {"thing1": "Product name", "time2": "Order time"},
                        title="Order shipped")
        yield sb


def test_check_remote_finds_each_disagreement_at_its_line(tmp_path, capsys, wechat):
    path = tmp_path / "templates.yaml"
    path.write_text(TEMPLATES)
    cfg = str(write_config(tmp_path, api_base=wechat.url, templates=str(path)))
    ran = herald(capsys, "check", "--remote", "--config", cfg)
    assert ran.code == 2, ran.text
    t = TEMPLATES
    problems = [line.removeprefix("problem: ") for line in ran.err.splitlines()
                if line.startswith("problem: ")]
    assert problems[0] == (
        f"templates.yaml:{line_of(t, 'data:', 'missing_key')}: missing_key.data: lacks thing2 "
        "(数量), a keyword of WeChat's template TPL_MISS: every keyword needs a value")
    assert problems[1] == (
        f"templates.yaml:{line_of(t, 'thing3')}: extra_key.data.thing3: not a keyword of "
        "WeChat's template TPL_EXTRA, did you mean thing1? (its keywords: thing1)")
    assert problems[2] == (
        f"templates.yaml:{line_of(t, 'enum4: [', 'enum_bad')}: enum_bad.enums.enum4: '已签收' "
        "is not one of WeChat's values (待发货, 已发货)")
    assert problems[3].startswith(
        f"templates.yaml:{line_of(t, 'TPL_GONE0')}: gone.template_id: TPL_GONE0 is not in app "
        "default's template list (did you mean TPL_GONE1?); it has 7: TPL_OK 下单成功, ")
    assert len(problems) == 4
    assert "templates of app default: 1 of 5 match WeChat's list (7 there); 3 not in " \
           "templates.yaml (`templates pull --app default`)" in ran.out


def test_templates_pull_then_check_remote_then_delivered(tmp_path, capsys, wechat,
                                                         runtime_factory):
    path = tmp_path / "templates.yaml"
    path.write_text(TEMPLATES.split("\nmissing_key")[0] + "\n")  # only ok_tpl
    cfg = str(write_config(tmp_path, api_base=wechat.url, templates=str(path),
                           console={"listen": None}))
    ran = herald(capsys, "templates", "pull", "--config", cfg)
    assert ran.code == 0, ran.text
    pulled = ran.out
    entries = yaml.safe_load(pulled)
    assert set(entries) == {"tpl_tplmiss", "tpl_tplextra", "tpl_tplenum", "tpl_tplgone1",
                            "tpl_tplnew", "order_shipped"}
    new = entries["tpl_tplnew"]
    assert new == {"template_id": "TPL_NEW", "params": ["thing2", "amount3", "phrase4", "enum5"],
                   "data": {"thing2": "{{ thing2 }}", "amount3": "{{ amount3 }}",
                            "phrase4": "{{ phrase4 }}", "enum5": "{{ enum5 }}"},
                   "enums": {"enum5": ["运输中", "已签收"]}, "long_term": True}
    assert entries["order_shipped"]["params"] == ["product_name", "order_time"]
    assert "long_term" not in entries["order_shipped"]
    assert '    thing2: "{{ thing2 }}"             # 商品名称 (thing: up to 20 characters)\n' \
           '    amount3: "{{ amount3 }}"           # 金额 (amount)\n' in pulled
    assert "# 订单发货提醒: long-term subscription (type 3)" in pulled
    assert "# example: 商品名称: 可口可乐; 金额: 3元; 状态: 已发货; 物流: 运输中" in pulled
    assert "6 templates of app default not in templates.yaml" in ran.err
    # pasted as it is, the file loads and matches WeChat
    path.write_text(path.read_text() + "\n" + pulled)
    load_templates(path)
    ran = herald(capsys, "check", "--remote", "--config", cfg)
    assert ran.code == 0, ran.text
    assert "templates of app default: 7 of 7 match WeChat's list (7 there)" in ran.out
    assert "warning" not in ran.err
    again = herald(capsys, "templates", "pull", "--config", cfg)
    assert again.code == 0 and again.out == ""
    assert "all 7 templates of its list are in templates.yaml already" in again.err
    # a value outside the enum list is refused before it is queued; a good one delivered
    bad = herald(capsys, "enqueue", "tpl_tplnew", "oUser", "--config", cfg, "--params",
                 '["可口可乐", "3", "已发货", "丢失"]')
    assert bad.code == 2 and "enum5" in bad.err and "运输中" in bad.err
    herald(capsys, "init-db", "--config", cfg)
    ok = herald(capsys, "enqueue", "tpl_tplnew", "oUser", "--config", cfg, "--params",
                '["可口可乐", "3", "已发货", "运输中"]')
    assert ok.code == 0, ok.text
    shop = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    rt = runtime_factory(shop, wechat, templates=str(path))
    with shop.connection_context():
        stats = dispatch.run(rt)
        row = MsgList.get_by_id(queued(ok.out))
    assert stats.sent == 1 and row.status == "success", row.error
    [sent] = wechat.accepted
    assert sent["template_id"] == "TPL_NEW" and sent["data"]["enum5"] == {"value": "运输中"}


def test_pull_needs_only_that_apps_credentials(tmp_path, wechat):
    cfg = write_config(tmp_path, api_base=wechat.url, apps={
        "default": {"appid": APPID, "secret": SECRET},
        "shop": {"appid": "${SHOP_APPID}", "secret": "${SHOP_SECRET}"}})
    ran = herald_child("templates", "pull", "--app", "default", "--config", str(cfg))
    assert ran.code == 0, ran.text
    assert "TPL_NEW" in ran.out
    ran = herald_child("templates", "pull", "--app", "shop", "--config", str(cfg))
    assert ran.code == 2 and "apps.shop.appid: environment variable SHOP_APPID is not set" \
        in ran.err
    ran = herald_child("templates", "pull", "--app", "nope", "--config", str(cfg))
    assert ran.code == 2 and "'nope' is not a configured app" in ran.err


# ----------------------------------------------------------------- templates.yaml lines


def test_template_errors_point_at_the_offending_keys_own_line(tmp_path, capsys):
    text = textwrap.dedent("""\
        # line 1
        typo_key:
          template_id: T2
          pagee: pages/x
          data:
            thing1: "{{ a }}"
            amount3: "twelve"
          enums:
            thing1: [a, b]

        bad_channel:
          channel: subscrib
          template_id: T3
          data:
            thing1: x

        falls:
          template_id: T4
          data:
            thing1: x
          fallback: [typo_kei]
        """)
    path = tmp_path / "templates.yaml"
    path.write_text(text)
    cfg = str(write_config(tmp_path, templates=str(path)))
    ran = herald(capsys, "check", "--config", cfg)
    assert ran.code == 2
    err = ran.err
    assert f"templates.yaml:{line_of(text, 'pagee')}: typo_key.pagee: unknown key for a " \
           "subscribe template, did you mean 'page'?" in err
    assert f"templates.yaml:{line_of(text, 'amount3')}: typo_key.data.amount3: the constant " \
           "amount3: 'twelve' is not a valid amount" in err
    assert f"templates.yaml:{line_of(text, 'thing1: [a')}: typo_key.enums.thing1: thing1 is " \
           "a thing, not an enum keyword" in err
    assert f"templates.yaml:{line_of(text, 'subscrib')}: bad_channel.channel: 'subscrib' is " \
           "not a channel, did you mean 'subscribe'?" in err
    assert f"templates.yaml:{line_of(text, 'fallback')}: falls.fallback: 'typo_kei' is not a " \
           "template, did you mean 'typo_key'?" in err
    assert "Traceback" not in err


def test_check_remote_skips_when_the_list_cannot_be_fetched(tmp_path, capsys):
    cfg = str(write_config(tmp_path, api_base="http://127.0.0.1:9"))
    ran = herald(capsys, "check", "--remote", "--config", cfg)
    assert ran.code == 1
    assert "app default: templates not checked against WeChat: no token" in ran.err
