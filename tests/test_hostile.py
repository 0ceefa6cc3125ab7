"""Hostile rows on every dialect: whatever another program writes into msg_list, the
queue goes on.

Each kind of hostile row below is inserted the way an application writes it (its own
driver connection, plain SQL, literal SQL where a driver parameter cannot say it; on
MySQL also from a session with sql_mode = '') beside one plain good row. Then one
dispatch run against the sandbox. The good row must be delivered by that run, every
time; the hostile row must be refused at INSERT with an error naming its column (or
value, where the server's message names only that), or end `fail` with a reason naming
the column or the cause, or be delivered correctly, or stay as it was: KINDS says which,
per dialect. Meanwhile the operator's readers keep working: `status`
(commands.status.gather), the metrics collector (metrics.QueueCollector) and `retry`
(db.ops.retry), before and after the run.

The table of kinds is the specification; test_print_the_table prints it (pytest -s).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import clock
from commands.status import gather as status_gather
from db.connection import init_schema
from db.ops import Selection
from db.ops import retry as ops_retry
from jobs import dispatch, stale_retry
from metrics import QueueCollector
from runtime import Runtime
from sandbox.wechat import Sandbox
from tests.bound import bind, connect
from tests.conftest import database_url, make_config, template_keys
from tests.hostile_support import AppConnection, Raw, seen, wipe
from tests.support import APPID, SECRET

DIALECTS = ("sqlite", "postgres", "mysql")
ORDER_ID = "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc"
TEMPLATES = f"""
order_status:
  template_id: {ORDER_ID}
  page: pages/order/detail
  params: [goods_name, goods_price, order_status, remark]
  data:
    thing2: "{{{{ goods_name }}}}"
    amount3: "{{{{ goods_price }}}}元"
    thing11: "{{{{ order_status }}}}"
    thing5: "{{{{ remark }}}}"
price_fmt:
  template_id: FMT0000000000000000000000000000000000000001
  params: [goods_name, goods_price]
  data:
    thing1: "{{{{ goods_name }}}}"
    amount2: "{{{{ '%.2f'|format(goods_price) }}}}"
shown:
  template_id: SHW0000000000000000000000000000000000000001
  params: [flag, price, extra]
  data:
    thing1: "{{{{ flag }}}}"
    number2: "{{{{ price }}}}"
    thing3: "{{{{ extra }}}}"
twin_a:
  template_id: TWN0000000000000000000000000000000000000001
  params: [goods_name]
  data: {{thing1: "{{{{ goods_name }}}}"}}
twin_b:
  template_id: TWN0000000000000000000000000000000000000001
  params: [goods_name]
  data: {{thing1: "{{{{ goods_name }}}} (b)"}}
"""
PAGES = {"pages/order/detail"}
GOOD = '["Tea", 3, "shipped", "ok"]'
GOOD_DATA = {"thing2": "Tea", "amount3": "3元", "thing11": "shipped", "thing5": "ok"}
FAR_PAST = "2024-01-01 00:00:00"


# ----------------------------------------------------------------- what may happen


@dataclass(frozen=True)
class Refused:
    """The INSERT fails; its error message holds every word (case-insensitive)."""

    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"refused at INSERT ({', '.join(self.words)})"


@dataclass(frozen=True)
class Fails:
    """The row ends fail; its error holds every word; WeChat never accepted it.
    sent: it did reach the sandbox (which refused it)."""

    words: tuple[str, ...]
    sent: bool = False

    def __str__(self) -> str:
        return f"fail: {' / '.join(self.words)}" + (" (WeChat's answer)" if self.sent else "")


@dataclass(frozen=True)
class Delivered:
    """The row ends success with WeChat's msgid, accepted exactly once, for `touser`
    (default: the row's openid) with `data` (when given)."""

    data: Mapping[str, str] | None = None
    touser: str | None = None

    def __str__(self) -> str:
        if self.data is None:
            return "delivered"
        return "delivered " + json.dumps(dict(self.data), ensure_ascii=False)


@dataclass(frozen=True)
class Stays:
    """The row keeps its status and is never sent."""

    status: str

    def __str__(self) -> str:
        return f"stays {self.status}, never sent"


Expect = Refused | Fails | Delivered | Stays


def refused(*words: str) -> Refused:
    return Refused(words)


def fails(*words: str, sent: bool = False) -> Fails:
    return Fails(words, sent)


def future(days: float = 1, fmt: str = "%Y-%m-%d %H:%M:%S") -> Callable[[], str]:
    return lambda: (clock.now() + timedelta(days=days)).strftime(fmt)


@dataclass(frozen=True)
class Kind:
    name: str
    cols: Mapping[str, Any]  # over the base row (template order_status, own openid, GOOD)
    expect: Mapping[str, Expect]  # dialect -> expectation
    loose: bool = False  # MySQL: insert from a session with sql_mode = ''
    recover: bool = False  # run stale_retry and a second dispatch before judging
    dedup_with_good: bool = False  # the row takes the good row's dedup_key

    def row(self) -> dict[str, Any]:
        base: dict[str, Any] = {"template": "order_status", "openid": f"oH-{self.name}",
                                "params": GOOD}
        for k, v in self.cols.items():
            base[k] = v() if callable(v) else v
        return {k: v for k, v in base.items() if v is not OMIT}


OMIT = object()


def every(e: Expect) -> dict[str, Expect]:
    return dict.fromkeys(DIALECTS, e)


def per(sqlite: Expect, postgres: Expect, mysql: Expect) -> dict[str, Expect]:
    return {"sqlite": sqlite, "postgres": postgres, "mysql": mysql}


BAD_UTF8 = Raw({"sqlite": "CAST(X'FF' AS TEXT)",
                "postgres": "convert_from('\\xff'::bytea, 'UTF8')",
                "mysql": "X'FF'"})
NESTED = "[" * 20000 + "]" * 20000
D = Delivered()
UTF8_PG = refused("invalid byte sequence", "utf8")

# name, columns, expected outcome per dialect (sqlite, postgres, mysql)
KINDS: tuple[Kind, ...] = (
    # -- send_at ----------------------------------------------------------------------
    Kind("send_at epoch seconds (integer)", {"send_at": 1700000000},
         per(D, refused("send_at"), refused("send_at"))),
    Kind("send_at epoch seconds (real)", {"send_at": 1700000000.5},
         per(D, refused("send_at"), refused("send_at"))),
    Kind("send_at epoch seconds as text", {"send_at": "1700000000"},
         per(D, refused('"1700000000"'), refused("send_at"))),
    Kind("send_at epoch milliseconds", {"send_at": 1700000000000},
         per(refused("send_at"), refused("send_at"), refused("send_at"))),
    Kind("send_at '1x'", {"send_at": "1x"},
         per(refused("send_at"), refused('"1x"'), refused("send_at"))),
    Kind("send_at ''", {"send_at": ""},
         per(refused("send_at"), refused('""'), refused("send_at"))),
    Kind("send_at ISO-8601 T and Z", {"send_at": "2024-01-01T00:00:00Z"},
         per(D, D, refused("send_at"))),
    Kind("send_at ISO-8601 +08:00", {"send_at": "2024-01-01T08:00:00+08:00"},
         per(D, D, refused("send_at"))),
    Kind("send_at ISO-8601 fractions", {"send_at": "2024-01-01T00:00:00.123456Z"},
         per(D, D, refused("send_at"))),
    Kind("send_at tomorrow, ISO-8601 Z", {"send_at": future(fmt="%Y-%m-%dT%H:%M:%SZ")},
         per(Stays("wait"), Stays("wait"), refused("send_at"))),
    Kind("send_at tomorrow", {"send_at": future()}, every(Stays("wait"))),
    Kind("send_at year 9999", {"send_at": "9999-12-31 23:59:59"},
         per(Stays("wait"), Stays("wait"), refused("send_at"))),  # TIMESTAMP ends in 2038
    Kind("send_at 2038-01-19 03:14:08", {"send_at": "2038-01-19 03:14:08"},
         per(Stays("wait"), Stays("wait"), refused("send_at"))),
    Kind("send_at a time without a date", {"send_at": "12:00"},
         per(refused("send_at"), refused('"12:00"'), refused("send_at"))),
    Kind("send_at February 30", {"send_at": "2026-02-30 10:00:00"},
         per(refused("send_at"), refused("out of range"), refused("send_at"))),
    Kind("send_at month 13", {"send_at": "2026-13-01 00:00:00"},
         per(refused("send_at"), refused("out of range"), refused("send_at"))),
    Kind("send_at 19 letters", {"send_at": "abcdefghijklmnopqrs"},
         per(refused("send_at"), refused('"abcdefghijklmnopqrs"'), refused("send_at"))),
    Kind("send_at zero date", {"send_at": "0000-00-00 00:00:00"},
         per(refused("send_at"), refused("out of range"), fails("send_at", "not a time"))),
    Kind("send_at NULL", {"send_at": None},
         per(refused("send_at"), refused("send_at"), D)),  # MariaDB writes now for NULL
    Kind("send_at a blob", {"send_at": Raw({"sqlite": "X'00'", "postgres": "'\\x00'::bytea",
                                            "mysql": "X'00'"})},
         per(refused("send_at"), refused("send_at"), refused("send_at"))),
    Kind("send_at '1x' with sql_mode ''", {"send_at": "1x"},
         per(refused("send_at"), refused('"1x"'), fails("send_at", "not a time")),
         loose=True),
    # -- expire_at, created_at, updated_at --------------------------------------------
    Kind("expire_at before send_at", {"send_at": FAR_PAST, "expire_at": "2023-01-01 00:00:00"},
         every(fails("expired", "expire_at"))),
    Kind("expire_at '1x'", {"expire_at": "1x"},
         per(refused("expire_at"), refused('"1x"'), refused("expire_at"))),
    Kind("expire_at zero date", {"expire_at": "0000-00-00 00:00:00"},
         per(refused("expire_at"), refused("out of range"), fails("expire_at"))),
    Kind("expire_at tomorrow", {"expire_at": future()}, every(D)),
    Kind("created_at text", {"created_at": "yesterday noon"},
         per(refused("created_at"), refused('"yesterday noon"'), refused("created_at"))),
    Kind("created_at ISO-8601 +08:00", {"created_at": "2024-01-01T08:00:00+08:00"},
         per(D, D, refused("created_at"))),
    Kind("updated_at unreadable on a failed row",
         {"status": "fail", "updated_at": "0000-00-00 00:00:00"},
         per(Stays("fail"), refused("out of range"), Stays("fail"))),
    Kind("updated_at text on a failed row", {"status": "fail", "updated_at": "garbage"},
         per(Stays("fail"), refused('"garbage"'), refused("updated_at"))),
    # -- priority ---------------------------------------------------------------------
    Kind("priority 1.5", {"priority": 1.5}, per(refused("priority"), D, D)),
    Kind("priority '1x'", {"priority": "1x"},
         per(refused("priority"), refused('"1x"'), refused("priority"))),
    Kind("priority '1x' with sql_mode ''", {"priority": "1x"},
         per(refused("priority"), refused('"1x"'), D), loose=True),
    Kind("priority 2^40", {"priority": 2**40},
         per(D, refused("out of range"), refused("priority"))),
    Kind("priority -2^31", {"priority": -(2**31)}, every(D)),
    Kind("priority NULL", {"priority": None}, every(refused("priority"))),
    # -- attempts ---------------------------------------------------------------------
    Kind("attempts negative", {"attempts": -5}, every(D)),
    Kind("attempts past max_attempts", {"attempts": 99}, every(D)),
    Kind("attempts 2^31-1", {"attempts": 2**31 - 1}, every(D)),
    Kind("attempts 2^63-1", {"attempts": 2**63 - 1},
         per(D, refused("out of range"), refused("attempts"))),
    Kind("attempts 1.5", {"attempts": 1.5}, every(D)),
    Kind("attempts text", {"attempts": "two"},
         per(D, refused('"two"'), refused("attempts"))),
    # -- status set by hand -------------------------------------------------------------
    Kind("status sending, no lease", {"status": "sending"}, every(D), recover=True),
    Kind("status success", {"status": "success"}, every(Stays("success"))),
    Kind("status cancelled", {"status": "cancelled"}, every(Stays("cancelled"))),
    Kind("status fail", {"status": "fail"}, every(Stays("fail"))),
    Kind("status 'WAIT'", {"status": "WAIT"}, every(refused("status"))),
    Kind("status NULL", {"status": None}, every(refused("status"))),
    # -- text that is not text ------------------------------------------------------------
    Kind("params not UTF-8", {"params": BAD_UTF8},
         per(fails("params", "UTF-8"), UTF8_PG, refused("params"))),
    Kind("params not UTF-8 with sql_mode ''", {"params": BAD_UTF8},
         per(fails("params", "UTF-8"), UTF8_PG, fails("params", "JSON")), loose=True),
    Kind("openid not UTF-8", {"openid": BAD_UTF8},
         per(fails("openid", "UTF-8"), UTF8_PG, refused("openid"))),
    Kind("template not UTF-8", {"template": BAD_UTF8},
         per(fails("template", "UTF-8"), UTF8_PG, refused("template"))),
    Kind("app not UTF-8", {"app": BAD_UTF8},
         per(fails("app", "UTF-8"), UTF8_PG, refused("app"))),
    Kind("page not UTF-8", {"page": BAD_UTF8},
         per(fails("page", "UTF-8"), UTF8_PG, refused("page"))),
    Kind("dedup_key not UTF-8", {"dedup_key": BAD_UTF8},
         per(fails("dedup_key", "UTF-8"), UTF8_PG, refused("dedup_key"))),
    Kind("error not UTF-8 on a waiting row", {"error": BAD_UTF8},
         per(fails("error", "UTF-8"), UTF8_PG, refused("error"))),
    # -- params ---------------------------------------------------------------------------
    Kind("params nested 20,000 deep", {"params": NESTED}, every(fails("params", "nested"))),
    Kind("params 70,000 characters", {"params": json.dumps(["x" * 70000, 1, "a", "b"])},
         per(fails("params", "64 KiB"), fails("params", "64 KiB"), refused("params"))),
    Kind("params with a duplicate key",
         {"params": '{"goods_name": "A", "goods_name": "B", "goods_price": 1, '
                    '"order_status": "x", "remark": "y"}'},
         every(fails("params", "goods_name", "twice"))),
    Kind("params with NaN", {"params": '["Tea", NaN, "x", "y"]'},
         every(fails("params", "JSON"))),
    Kind("params with 1e400", {"params": '["Tea", 1e400, "x", "y"]'},
         every(fails("amount3", "1e400"))),
    Kind("params a JSON string", {"params": '"Tea"'}, every(fails("params", "a string"))),
    Kind("params JSON null", {"params": "null"}, every(fails("params", "null"))),
    Kind("params not JSON, holding the app secret", {"params": f"oops {SECRET}"},
         every(fails("params", "JSON", "<redacted>"))),
    Kind("params with one param null", {"params": '["Tea", null, "x", "y"]'},
         every(fails("goods_price", "null"))),
    Kind("params one value short", {"params": '["Tea", 3, "x"]'},
         every(fails("params", "missing remark"))),
    Kind("params object lacking a name", {"params": '{"goods_name": "Tea"}'},
         every(fails("goods_price", "undefined"))),
    Kind("params SQL-looking text", {"params": json.dumps(["'; DROP TABLE msg_list; --", 1,
                                                           "x", "y"])},
         every(Delivered({**GOOD_DATA, "thing2": "'; DROP TABLE msg_li", "amount3": "1元",
                          "thing11": "x", "thing5": "y"}))),
    Kind("params emoji and Chinese", {"params": '["🎉订单", 1, "已发货", "谢谢"]'},
         every(Delivered({"thing2": "🎉订单", "amount3": "1元", "thing11": "已发货",
                          "thing5": "谢谢"}))),
    Kind("params a lone surrogate", {"params": '["a\\ud800b", 1, "x", "y"]'},
         every(fails("thing2", "surrogate"))),
    Kind("params control characters", {"params": '["a\\u0000b\\u0007c", 1, "x", "y"]'},
         every(Delivered({"thing2": "a b c", "amount3": "1元", "thing11": "x",
                          "thing5": "y"}))),
    Kind("params true, 100.00 and an object",
         {"template": "shown", "params": '[true, 100.00, {"a": [1, true, null]}]'},
         every(Delivered({"thing1": "true", "number2": "100.00",
                          "thing3": '{"a":[1,true,null]}'}))),
    Kind("'%.2f'|format on a string param",
         {"template": "price_fmt", "params": '["Tea", "12.5"]'},
         every(fails("amount2", "format", "TypeError"))),
    Kind("'%.2f'|format on a number", {"template": "price_fmt", "params": '["Tea", 12.5]'},
         every(Delivered({"thing1": "Tea", "amount2": "12.50"}))),
    # -- template, openid, page, app --------------------------------------------------------
    Kind("template of 10,000 characters", {"template": "t" * 10000},
         per(fails("unknown template"), refused("character varying(128)"),
             refused("template"))),
    Kind("template unknown", {"template": "order_statsu"},
         every(fails("unknown template", "did you mean 'order_status'"))),
    Kind("template SQL-looking", {"template": "order_status'; DROP TABLE msg_list; --"},
         every(fails("unknown template"))),
    Kind("template_id shared by two templates", {"template": "TWN" + "0" * 39 + "1",
                                                  "params": '["Tea"]'},
         every(fails("several templates", "twin_a", "twin_b"))),
    Kind("template by its template_id", {"template": ORDER_ID}, every(Delivered(GOOD_DATA))),
    Kind("template with spaces around", {"template": "  order_status  "}, every(D)),
    Kind("template NULL", {"template": None}, every(refused("template"))),
    Kind("template ''", {"template": ""}, every(fails("template is empty"))),
    Kind("openid ''", {"openid": ""}, every(fails("openid is empty"))),
    Kind("openid with spaces around", {"openid": "  oPadded  "},
         every(Delivered(GOOD_DATA, touser="oPadded"))),
    Kind("openid of 10,000 characters", {"openid": "o" * 10000},
         per(Delivered(touser="o" * 10000), refused("character varying(128)"),
             refused("openid"))),
    Kind("openid with a NUL", {"openid": "o\x00nul"},
         per(Delivered(touser="o\x00nul"), refused("NUL"), Delivered(touser="o\x00nul"))),
    Kind("openid NULL", {"openid": None}, every(refused("openid"))),
    Kind("page with a newline", {"page": "pages/order/detail\nevil"},
         every(fails("41030", "invalid page", sent=True))),
    Kind("page of 10,000 characters", {"page": "p" * 10000},
         every(fails("41030", sent=True))),
    Kind("page with a query string", {"page": "pages/order/detail?id=1"}, every(D)),
    Kind("app not configured", {"app": "shop"}, every(fails("unknown app 'shop'"))),
    Kind("app ''", {"app": ""}, every(D)),
    Kind("dedup_key of the good row", {}, every(refused("dedup_key")), dedup_with_good=True),
    Kind("dedup_key of 191 characters", {"dedup_key": "k" * 191}, every(D)),
    # -- Herald's own columns, set by hand ---------------------------------------------------
    Kind("errcode and error set on a waiting row", {"errcode": 40003, "error": "by hand"},
         every(D)),
    Kind("claimed_by and lease_until set on a waiting row",
         {"claimed_by": "someone", "lease_until": FAR_PAST}, every(D)),
    Kind("msgid set on a waiting row", {"msgid": "x" * 32}, every(D)),
    Kind("id 2^53+1", {"id": 2**53 + 1}, every(D)),
    Kind("id negative", {"id": -7}, every(D)),
    Kind("parent_id of no row", {"parent_id": 999999999}, every(D)),
    Kind("phone garbage on a subscribe row", {"phone": "not a phone"}, every(D)),
)


def expectation(kind: Kind, dialect: str) -> Expect:
    return kind.expect[dialect]


# ----------------------------------------------------------------- the environment


@dataclass
class Env:
    dialect: str
    url: str
    db: Any
    app: AppConnection
    sandbox: Sandbox
    folder: Path
    templates: Path
    runtimes: list[Runtime] = field(default_factory=list)

    def runtime(self, **overrides: Any) -> Runtime:
        cfg = make_config(self.url, self.sandbox.url, self.folder,
                          templates=str(self.templates), **overrides)
        rt = Runtime.build(cfg, self.db)
        self.runtimes.append(rt)
        return rt


@pytest.fixture(scope="module", params=DIALECTS)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp(f"hostile-{request.param}")
    url = database_url(request.param, folder)
    db = connect(url)
    init_schema(db)
    tpl = folder / "templates.yaml"
    tpl.write_text(TEMPLATES, encoding="utf-8")
    sb = Sandbox(apps={APPID: SECRET}, templates=template_keys(tpl), pages=PAGES).start()
    app = AppConnection(request.param, url)
    e = Env(request.param, url, db, app, sb, folder, tpl)
    try:
        yield e
    finally:
        for rt in e.runtimes:
            rt.close()
        app.close()
        sb.stop()
        db.close()


@pytest.fixture
def fresh(env: Env) -> Iterator[Env]:
    bind(env.db)  # the models point at this module's database
    wipe(env.db)
    env.sandbox.reset_records()
    env.sandbox.clear_faults()
    yield env
    for rt in env.runtimes:
        rt.close()
    env.runtimes.clear()
    env.db.close()


# ----------------------------------------------------------------- the readers


def readers_work(env: Env, rows: int) -> dict[str, Any]:
    """status, the metrics collector and a dry-run retry read the whole queue."""
    now = clock.now()
    cfg = make_config(env.url, env.sandbox.url, env.folder, templates=str(env.templates))
    report = status_gather(env.db, cfg, now, failures=50)
    assert not [p for p in report["problems"] if "cannot be read" in p], report["problems"]
    assert sum(report["counts"].values()) == rows, report
    families = {m.name: m for m in QueueCollector(env.db).collect()}
    up = families["herald_database_up"].samples[0].value
    assert up == 1, "the metrics collector could not read the queue"
    queued = sum(s.value for s in families["herald_queue_rows"].samples)
    assert queued == rows
    dry = ops_retry(env.db, Selection(every=True), now=now, dry_run=True)
    assert len(dry.changed) == report["counts"]["fail"]
    return report


def insert_kind(env: Env, kind: Kind) -> tuple[int | None, Exception | None]:
    cols = kind.row()
    if kind.dedup_with_good:
        cols["dedup_key"] = "good-row"
    try:
        return env.app.insert(cols, loose=kind.loose and env.dialect == "mysql"), None
    except Exception as exc:  # noqa: BLE001 - which error each driver raises varies
        return None, exc


def judge(env: Env, kind: Kind, expect: Expect, rid: int | None, exc: Exception | None,
          touser: str) -> None:
    if isinstance(expect, Refused):
        assert exc is not None, f"{kind.name}: the INSERT was accepted (row {rid})"
        text = str(exc).lower()
        missing = [w for w in expect.words if w.lower() not in text]
        assert not missing, f"{kind.name}: refused, but the error lacks {missing}: {exc}"
        return
    assert exc is None, f"{kind.name}: the INSERT was refused: {exc}"
    assert rid is not None
    s = seen(env.db, rid)
    accepted = [m for m in env.sandbox.accepted if m["touser"] == touser]
    if isinstance(expect, Fails):
        assert s.status == "fail", f"{kind.name}: {s}"
        error = (s.error or "").lower()
        missing = [w for w in expect.words if w.lower() not in error]
        assert not missing, f"{kind.name}: error {s.error!r} lacks {missing}"
        assert not accepted, f"{kind.name}: failed, yet WeChat accepted it"
        attempts = [a for a in env.sandbox.attempts if a.touser == touser]
        assert bool(attempts) is expect.sent, f"{kind.name}: sent={bool(attempts)}"
    elif isinstance(expect, Delivered):
        assert s.status == "success", f"{kind.name}: {s}"
        assert s.msgid and s.msgid.isdigit() and int(s.msgid) > 2**53, s
        assert len(accepted) == 1, f"{kind.name}: accepted {len(accepted)} times"
        if expect.data is not None:
            got = {k: v["value"] for k, v in accepted[0]["data"].items()}
            assert got == dict(expect.data), f"{kind.name}: sent {got}"
    else:
        assert s.status == expect.status, f"{kind.name}: {s}"
        assert not accepted and not [a for a in env.sandbox.attempts if a.touser == touser]
    assert SECRET not in (s.error or "")


# ----------------------------------------------------------------- the tests


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_hostile_row_beside_a_good_row(fresh: Env, kind: Kind, caplog) -> None:
    env = fresh
    expect = expectation(kind, env.dialect)
    good = env.app.insert({"template": "order_status", "openid": "oGood", "params": GOOD,
                           "dedup_key": "good-row"})
    rid, exc = insert_kind(env, kind)
    rows = 1 + (rid is not None)
    readers_work(env, rows)
    rt = env.runtime()
    with caplog.at_level(logging.INFO):
        dispatch.run(rt)
        # the good row is delivered by this one run, whatever sits beside it
        assert seen(env.db, good).status == "success", seen(env.db, good)
        readers_work(env, rows)
        if kind.recover:
            stale_retry.run(rt)  # nothing of Herald's is sending now
            dispatch.run(rt)
    touser = getattr(expect, "touser", None) or str(kind.row().get("openid"))
    judge(env, kind, expect, rid, exc, touser)
    good_sent = [m for m in env.sandbox.accepted if m["touser"] == "oGood"]
    assert len(good_sent) == 1
    assert {k: v["value"] for k, v in good_sent[0]["data"].items()} == GOOD_DATA
    report = readers_work(env, rows)
    assert SECRET not in json.dumps(report, ensure_ascii=False)
    assert SECRET not in caplog.text
    ops_retry(env.db, Selection(every=True), now=clock.now())  # re-drive what failed


def test_every_hostile_row_in_one_batch(fresh: Env, caplog) -> None:
    """All of them at once, the good row among them: one claim, one run."""
    env = fresh
    good = env.app.insert({"template": "order_status", "openid": "oGood", "params": GOOD,
                           "dedup_key": "good-row"})
    inserted: list[tuple[Kind, int]] = []
    for kind in KINDS:
        if kind.recover or isinstance(expectation(kind, env.dialect), Refused):
            continue
        rid, exc = insert_kind(env, kind)
        assert exc is None, (kind.name, exc)
        assert rid is not None
        inserted.append((kind, rid))
    readers_work(env, 1 + len(inserted))
    rt = env.runtime(dispatch={"batch_size": 500})
    with caplog.at_level(logging.INFO):
        stats = dispatch.run(rt)
    assert seen(env.db, good).status == "success"
    wrong = []
    for kind, rid in inserted:
        expect = expectation(kind, env.dialect)
        touser = getattr(expect, "touser", None) or str(kind.row().get("openid"))
        try:
            judge(env, kind, expect, rid, None, touser)
        except AssertionError as exc:
            wrong.append(str(exc).splitlines()[0])
    assert not wrong, "\n".join(wrong)
    readers_work(env, 1 + len(inserted))
    assert SECRET not in caplog.text
    # every row but those that stay as they are was taken up by the one run (claimed,
    # or failed as expired before any claim), the good row included
    moved = [k for k, _ in inserted if not isinstance(expectation(k, env.dialect), Stays)]
    assert stats.claimed + stats.expired == 1 + len(moved), stats


def test_print_the_table() -> None:
    """The specification, printed (pytest -s tests/test_hostile.py -k table)."""
    width = max(len(k.name) for k in KINDS)
    lines = [f"{'kind':<{width}}  sqlite | postgres | mysql"]
    for k in KINDS:
        outcomes = [str(k.expect[d]) for d in DIALECTS]
        if len(set(outcomes)) == 1:
            lines.append(f"{k.name:<{width}}  {outcomes[0]}")
        else:
            lines.append(f"{k.name:<{width}}  " + " | ".join(outcomes))
    print("\n" + "\n".join(lines))
    assert len(KINDS) >= 40
    assert all(set(k.expect) == set(DIALECTS) for k in KINDS)


def test_created_and_sent_times_are_utc_instants(fresh: Env) -> None:
    """An ISO-8601 send_at with an offset is the instant it names, not its wall time."""
    env = fresh
    if env.dialect == "mysql":
        pytest.skip("MySQL refuses ISO-8601 with an offset (see KINDS)")
    rid = env.app.insert({"template": "order_status", "openid": "oTz", "params": GOOD,
                          "send_at": "2024-01-01T08:00:00+08:00"})
    p = "?" if env.dialect == "sqlite" else "%s"
    from db.models import parse_utc
    raw = env.db.execute_sql(f"SELECT send_at FROM msg_list WHERE id = {p}", (rid,)).fetchone()
    assert parse_utc(raw[0]) == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
