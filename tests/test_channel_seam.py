"""The channel seam is closed: a new channel is one module, its sandbox and one registry
line, and nothing outside channels/ names a channel.

The proof is a channel the product does not have, defined here: `pigeon` (one class,
as a channel module would hold), its own loft (a tiny HTTP server on loopback), and
one registry line (channels.KINDS). templates.yaml loads it, its own checks run, the
`render` verb's judge renders it and refuses an app of the wrong kind, and dispatch
sends it end to end on a real SQLite file. Then the tree is searched: dispatch, the
verbs, the console and templates/ must not name any real channel, and channels/ and
templates/ have no import circle.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

import channels
from channels.base import (
    Answer,
    BuildError,
    Built,
    ChannelKind,
    CheckContext,
    Kind,
    Lend,
    Meaning,
    RowLike,
    TemplateLike,
)
from channels.common import check_url
from commands.render import Refused, judge
from config import Config
from jobs import dispatch
from templates import LoadContext, TemplateError, load_templates, parse_templates
from tests.conftest import insert_sql, make_config, row

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------- the channel module


class Pigeon(ChannelKind):
    """A carrier pigeon: POST {"to", "data"} to the template's loft; the loft answers
    {"code": N, "id": ...}, N from the answer table below."""

    name = "pigeon"
    keys = ("loft",)
    needs_template_id = False
    app_kinds = ("miniprogram",)
    app_need = "flies for a mini program only"
    answers = {
        0: Meaning(Kind.SUCCESS, "landed"),
        1: Meaning(Kind.TRANSIENT, "storm over the loft"),
        2: Meaning(Kind.PERMANENT, "the loft refuses this bird"),
    }

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.session = requests.Session()

    @classmethod
    def create(cls, config: Config, lend: Lend) -> Pigeon:
        return cls(config.http.timeout)  # needs nothing shared: asks lend for nothing

    def close(self) -> None:
        self.session.close()

    @classmethod
    def check(cls, spec: Mapping[str, Any], *, name: str, data: Sequence[tuple[str, str]],
              ctx: CheckContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        settings, problems = super().check(spec, name=name, data=data, ctx=ctx)
        if "loft" not in spec:
            problems.append(("loft", "required: the loft's URL"))
        elif (bad := check_url(spec["loft"])) is not None:
            problems.append(("loft", bad))
        return settings, problems

    @classmethod
    def precheck(cls, row: RowLike) -> str | None:
        return None if (row.openid or "").strip() else "no one to fly to"

    @classmethod
    def build(cls, tpl: TemplateLike, data: Mapping[str, str] | list[str], row: RowLike,
              app: str) -> Built:
        if not isinstance(data, Mapping):
            raise BuildError("a pigeon carries named values")
        openid = str(row.openid).strip()
        return Built(body={"to": openid, "data": dict(data)}, recipient=f"pigeon:{openid}",
                     target="POST the loft", extra={"loft": tpl.settings["loft"]})

    def send(self, built: Built, token: str | None) -> Answer:
        try:
            resp = self.session.post(str(built.extra["loft"]), json=built.body,
                                     timeout=self.timeout)
            answer = resp.json()
            code = int(answer["code"])
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            return Answer(Kind.TRANSIENT, None, f"the loft did not answer: {exc}"[:200])
        meaning = self.answers.get(code, Meaning(Kind.PERMANENT, "unknown code"))
        return Answer(meaning.kind, code, meaning.text,
                      msgid=str(answer["id"]) if meaning.kind is Kind.SUCCESS else None)


# ----------------------------------------------------------------- its sandbox


class Loft:
    """The pigeon's remote end on loopback: keeps every bird, refuses one whose data
    says `refuse`."""

    def __init__(self) -> None:
        self.birds: list[dict[str, Any]] = []
        loft = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                loft.birds.append(body)
                refused = any("refuse" in v for v in body["data"].values())
                out = json.dumps({"code": 2 if refused else 0,
                                  "id": f"p-{len(loft.birds)}"}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/loft"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Loft:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------- the registry line


@pytest.fixture
def pigeon(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loft]:
    monkeypatch.setitem(channels.KINDS, "pigeon", Pigeon)
    with Loft() as loft:
        yield loft


def templates_yaml(loft: str) -> str:
    return f"""
pigeon_news:
  channel: pigeon
  loft: {loft}
  params: [goods, status]
  data: {{title: "订单{{{{ status }}}}", goods: "{{{{ goods }}}}"}}
"""


def test_a_channel_defined_in_the_tests_loads_checks_renders_and_dispatches(
        pigeon, db, db_url, sandbox, runtime_factory, tmp_path):
    path = tmp_path / "templates.yaml"
    path.write_text(templates_yaml(pigeon.url), encoding="utf-8")
    oa = {"shop_oa": {"appid": "wxofficial00000001", "secret": "oa-secret-0123456789",
                      "kind": "official_account"}}
    rt = runtime_factory(db, sandbox, templates=str(path), apps=oa)
    tset = rt.templates.current
    assert tset.templates["pigeon_news"].channel == "pigeon"

    # its own checks run at load: a bad loft, and a key it does not declare
    with pytest.raises(TemplateError) as bad:
        parse_templates(templates_yaml("ftp://loft.example") + "  wings: 2\n", path,
                        context=LoadContext(config=rt.config, base_dir=tmp_path))
    text = str(bad.value)
    assert "pigeon_news.loft: 'ftp://loft.example' must start with http://" in text
    assert "pigeon_news.wings: unknown key for a pigeon template" in text

    # render (the verb's judge): the body it builds; its precheck; its app kinds
    req = judge(rt.config, tset, template="pigeon_news", openid="oU",
                params='["Flat white", "shipped"]')
    assert req.body == {"to": "oU", "data": {"title": "订单shipped", "goods": "Flat white"}}
    assert req.recipient == "pigeon:oU" and req.built.token_app is None
    with pytest.raises(Refused, match="no one to fly to"):
        judge(rt.config, tset, template="pigeon_news", openid=" ", params='["a", "b"]')
    with pytest.raises(Refused) as wrong_app:
        judge(rt.config, tset, template="pigeon_news", openid="oU", app="shop_oa",
              params='["a", "b"]')
    assert str(wrong_app.value) == ("template 'pigeon_news' (channel pigeon) flies for a "
                                    "mini program only; app 'shop_oa' is an official_account")

    # dispatch, end to end: its sender was built from the registry like every other
    assert isinstance(rt.senders["pigeon"], Pigeon)
    sent = insert_sql(db, template="pigeon_news", openid="oU", params='["Flat white", "shipped"]')
    refused = insert_sql(db, template="pigeon_news", openid="oV", params='["Tea", "refuse"]')
    wrong = insert_sql(db, template="pigeon_news", openid="oW", params='["a", "b"]',
                       app="shop_oa")
    stats = dispatch.run(rt)
    assert (stats.sent, stats.failed) == (1, 2)
    assert {b["to"] for b in pigeon.birds} == {"oU", "oV"}  # the wrong app never flew
    landed = [i for i, b in enumerate(pigeon.birds, 1) if b["to"] == "oU"]
    r = row(sent)
    assert (r.status, r.msgid, r.errcode) == ("success", f"p-{landed[0]}", 0)
    r = row(refused)
    assert (r.status, r.errcode) == ("fail", 2)
    assert "the loft refuses this bird" in r.error
    r = row(wrong)
    assert r.status == "fail" and "flies for a mini program only" in r.error


def test_a_config_without_the_registry_line_knows_no_such_channel(db_url, sandbox, tmp_path):
    path = tmp_path / "templates.yaml"
    path.write_text(templates_yaml("http://127.0.0.1:9/loft"), encoding="utf-8")
    cfg = make_config(db_url, sandbox.url, tmp_path, templates=str(path))
    with pytest.raises(TemplateError, match="'pigeon' is not a channel"):
        load_templates(path, context=LoadContext(config=cfg, base_dir=tmp_path))


# ----------------------------------------------------------------- nothing outside names one

# where a channel must not be named: the loop, the verbs, the console, template loading
SEALED = ["jobs/dispatch.py", "jobs/fallback.py", "jobs/grant_hold.py", "commands",
          "web/console", "templates"]
# the demo is a story told with every channel (it writes a config naming them, as the
# sandboxes and tests do); it is content, not a verb that could branch on a channel
DEMO = ROOT / "commands" / "demo.py"


def _files(where: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for name in where:
        p = ROOT / name
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return [p for p in out if p != DEMO]


def _code(path: Path) -> str:
    """The file's code without comments and docstrings (prose may speak of WeChat's
    subscribe messages; code may not branch on a channel)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body[0] = ast.Pass()
    return ast.unparse(tree)


def _hits(files: Sequence[Path]) -> list[str]:
    """Every place a real channel is named in code: its name as a string, its module,
    its class."""
    kinds = channels.KINDS.values()
    words = "|".join(re.escape(w) for w in sorted(
        {k.__module__ for k in kinds} | {k.__name__ for k in kinds}))
    names = "|".join(re.escape(n) for n in sorted(channels.KINDS))
    pattern = re.compile(rf"""(["'])(?:{names})\1|\b(?:{words})\b""")
    return [f"{p.name}: {m.group(0)}" for p in files for m in pattern.finditer(_code(p))]


def test_dispatch_the_verbs_the_console_and_templates_name_no_channel() -> None:
    assert {"subscribe", "sms", "webhook"} <= set(channels.KINDS)  # the real ones
    files = _files(SEALED)
    assert len(files) > 20
    assert _hits(files) == []


def test_the_search_finds_a_channel_named_in_code(tmp_path) -> None:
    """The search above sees the special cases this seam removed, not prose."""
    planted = tmp_path / "leak.py"
    planted.write_text('"""Sends subscribe messages."""\nimport channels.sms\n\n\n'
                       'def f(tpl):\n    """A subscribe template."""\n'
                       '    return tpl.channel == "oa_template" or Webhook\n',
                       encoding="utf-8")
    assert _hits([planted]) == ["leak.py: channels.sms", "leak.py: 'oa_template'",
                                "leak.py: Webhook"]


def _imports(path: Path, package: str) -> set[str]:
    """Modules of `package` that the file imports, TYPE_CHECKING imports included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] == package}
    return out


@pytest.mark.parametrize("package", ["channels", "templates"])
def test_no_import_circle_in(package: str) -> None:
    files = {(f"{package}.{p.stem}" if p.stem != "__init__" else package): p
             for p in (ROOT / package).glob("*.py")}
    graph = {m: {i for i in _imports(p, package) if i in files and i != m}
             for m, p in files.items()}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError(" -> ".join([*path[path.index(m):], m]))
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, [*path, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_every_channel_declares_its_app_kinds_and_answer_table() -> None:
    assert {n: k.app_kinds for n, k in channels.KINDS.items()} == {
        "subscribe": ("miniprogram",), "uniform": ("miniprogram",),
        "oa_template": ("official_account",), "sms": None, "webhook": None}
    for name, kind in channels.KINDS.items():
        assert kind.name == name
        assert kind.answers and all(isinstance(m, Meaning) for m in kind.answers.values())
    assert channels.KINDS["subscribe"].answers[43101].kind is Kind.PERMANENT
    assert channels.KINDS["sms"].answers["Ok"].kind is Kind.SUCCESS
    assert channels.KINDS["webhook"].answers[429].kind is Kind.TRANSIENT
