"""Property-based tests (hypothesis) of the console's input handling: its parsers on
their own, and arbitrary paths, query strings, form bodies and cookies against the real
WSGI app (web.console.app.Console on a seeded database, called with the environ waitress
builds).

Whatever arrives: no 5xx, no traceback in the body, a redirect only to a path on this
console (ASCII, never //host or \\host), and a refused request (4xx) changes nothing:
not a row, not the history, not a session.

Examples per test: HERALD_FUZZ_EXAMPLES (default 300; the servers' runs use a third).
Each run draws new examples (no example database is kept: nothing is written to the
tree); a failure prints the seed and the smallest request that fails.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import database_url
from tests.console_support import (
    PASSWORD,
    InProcess,
    fresh_db,
    in_process,
    same_origin,
    seed,
    state_of,
)
from web.console import inputs

EXAMPLES = int(os.environ.get("HERALD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SERVER_FUZZ = settings(FUZZ, max_examples=max(20, EXAMPLES // 3))

# ------------------------------------------------------------------ strategies

# the console's own names and values, so that examples reach past the first check
ROUTES = ["/", "/messages", "/messages/1", "/messages/4", "/failures", "/templates",
          "/grants", "/daemons", "/login", "/logout", "/actions/retry", "/actions/cancel",
          "/static/console.css", "/static/", "/nope"]
NAMES = ["status", "template", "app", "openid", "q", "before", "preview", "params", "next",
         "back", "ids", "errcode", "errcode_null", "confirm", "expected", "scope",
         "csrf_token", "username", "password"]
GOOD = ["fail", "wait", "success", "order_status", "default", "o_fail", "o_user0", "1",
        "4", "5", "6", "47003", "/failures", "/messages?status=fail", "ann", "filters",
        "ids", "[1,2,3,4]", "9223372036854775807", ""]
HOSTILE = ["\x00", "a\x00b", "\ud800", "\r\nSet-Cookie: x", "//evil.example", "/\\evil",
           "https://evil.example/", "你好", "😀", "\u2028", "%", "%zz", "%FF", "' OR 1=1 --",
           "<script>", "-1", "0", "1e9", "9" * 30, "x" * 300, "\u202e", "\ufeff"]

names = st.one_of(st.sampled_from(NAMES), st.text(max_size=12))
values = st.one_of(st.sampled_from(GOOD), st.sampled_from(HOSTILE), st.text(max_size=40),
                   st.binary(max_size=20).map(lambda b: b.decode("latin-1")))


def encode_pairs(pairs: list[tuple[str, str]], raw: bool) -> bytes:
    """key=value&... as bytes: %-encoded as a browser sends it, or (raw) each text
    written as its UTF-8 bytes, surrogates and all, with no escaping."""
    if raw:
        return b"&".join(k.encode("utf-8", "surrogatepass") + b"=" +
                         v.encode("utf-8", "surrogatepass") for k, v in pairs)
    return "&".join(quote(k.encode("utf-8", "surrogatepass"), safe="") + "=" +
                    quote(v.encode("utf-8", "surrogatepass"), safe="")
                    for k, v in pairs).encode("ascii")


pairs = st.lists(st.tuples(names, values), max_size=6)
bodies = st.one_of(st.builds(encode_pairs, pairs, st.booleans()), st.binary(max_size=200))
paths = st.one_of(
    st.sampled_from(ROUTES).map(str.encode),
    st.builds(lambda r, tail: r.encode() + tail, st.sampled_from(ROUTES),
              st.binary(max_size=12)),
    st.binary(max_size=30).map(lambda b: b"/" + b),
    st.text(max_size=20).map(lambda t: ("/" + t).encode("utf-8", "surrogatepass")),
)
cookies = st.one_of(st.none(), st.just(""), st.text(max_size=60).map(
    lambda t: t.encode("utf-8", "surrogatepass").decode("latin-1")),
    st.builds(lambda v: f"herald_session={v}; herald_session=x", values))


# ------------------------------------------------------------------ the parsers


@FUZZ
@given(st.binary(max_size=300))
def test_parse_pairs_gives_text_or_refuses(raw: bytes) -> None:
    try:
        got = inputs.parse_pairs(raw, "form")
    except inputs.BadInput:
        return
    for name, value in got.items():
        assert isinstance(name, str) and isinstance(value, str)
        value.encode("utf-8")  # strict: no lone surrogate ever comes out


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=80), st.sampled_from(HOSTILE + GOOD),
                 st.builds(lambda a, b: a + b, st.sampled_from(["/", "//", "/\\", "/%2F"]),
                           st.text(max_size=40))))
def test_a_redirect_target_is_an_encoded_path_here_or_refused(value: str | None) -> None:
    try:
        got = inputs.redirect_target(value, "next")
    except inputs.BadInput:
        assert value  # absent and empty mean the overview
        return
    assert same_origin(got), got
    assert re.fullmatch(r"[A-Za-z0-9/?:@!$&'()*+,;=\-._~%]+", got), got
    assert not re.search(r"%(?![0-9A-Fa-f]{2})", got)
    assert inputs.redirect_target(got, "next") == got  # encoding it again changes nothing
    where = urlsplit("http://console.example" + got)
    assert where.netloc == "console.example"
    if got != "/":
        assert unquote(got) == unquote(str(value))  # the same place as asked for


@FUZZ
@given(st.text(max_size=40), st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_a_guests_address_is_kept_as_ascii(path: str, raw_query: str) -> None:
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in path))  # paths arrive as UTF-8
    got = inputs.request_target("/" + path, raw_query)
    assert got.isascii() and got.startswith("/") and " " not in got and got.isprintable()
    assert unquote(got.split("?")[0]) == "/" + path


@FUZZ
@given(st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE + GOOD)), st.booleans())
def test_numbers_ids_flags_and_text_are_what_they_say_or_refused(value: str,
                                                                 marked: bool) -> None:
    if marked:  # a value someone pasted by mistake is never quoted back
        value = "Zq9Marker" + value
    for parse in (lambda v: inputs.integer(v, "n", low=1),
                  lambda v: inputs.id_list(v),
                  lambda v: inputs.flag({"f": v}, "f"),
                  lambda v: inputs.text({"f": v}, "f", limit=128),
                  lambda v: inputs.free_text({"f": v}, "f", limit=128)):
        try:
            got: Any = parse(value)
        except inputs.BadInput as exc:
            assert "Zq9Marker" not in str(exc)
            continue
        if isinstance(got, int) and not isinstance(got, bool):
            assert 1 <= got <= inputs.INT64_MAX
        if isinstance(got, tuple):
            assert all(1 <= i <= inputs.INT64_MAX for i in got)
        if isinstance(got, str):
            got.encode("utf-8")
            assert "\x00" not in got


# ------------------------------------------------------------------ the app


def check(app: InProcess, db: Any, method: str, path: bytes, query: bytes, body: bytes,
          cookie: str | None, content_type: str = "application/x-www-form-urlencoded") -> None:
    if app.app.sessions.get(app.session_id) is None:  # a fuzzed logout ended it
        app.session_id, session = app.app.sessions.create("ann", "operator")
        app.csrf = session.csrf
    before = state_of(db), len(app.app.sessions)
    got = app(method, path, query, body, cookie=cookie, content_type=content_type)
    assert got.status < 500, (got.status, got.text[-600:])
    assert "Traceback" not in got.text and 'File "' not in got.text
    if 300 <= got.status < 400:
        assert same_origin(got.location), got.location
    if got.status >= 400:
        assert (state_of(db), len(app.app.sessions)) == before, "a refused request changed state"


def fuzz_app(app: InProcess, db: Any, config: settings) -> None:
    @config
    @given(method=st.sampled_from(["GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE"]),
           path=paths, query=st.one_of(st.builds(encode_pairs, pairs, st.booleans()),
                                       st.binary(max_size=80)),
           body=bodies, cookie=cookies, with_csrf=st.booleans(), as_operator=st.booleans(),
           content_type=st.sampled_from(["application/x-www-form-urlencoded", "",
                                         "multipart/form-data", "text/plain"]))
    def one(method: str, path: bytes, query: bytes, body: bytes, cookie: str | None,
            with_csrf: bool, as_operator: bool, content_type: str) -> None:
        if with_csrf and method == "POST":
            body = b"csrf_token=" + app.csrf.encode() + (b"&" + body if body else b"")
        session = None if as_operator else cookie
        check(app, db, method, path, query, body, session, content_type)

    one()
    report(app, "any request")


def report(app: InProcess, what: str) -> None:
    statuses = Counter(a.status for a in app.calls)
    print(f"\n{what}: {len(app.calls)} requests, by status {dict(sorted(statuses.items()))}")


def test_any_request_to_the_app_sqlite(tmp_path: Path) -> None:
    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    seed(db)
    fuzz_app(in_process(db, tmp_path, url), db, FUZZ)
    db.close()


@pytest.mark.parametrize("name", ["postgres", "mysql"])
def test_any_request_to_the_app_on_the_servers(tmp_path: Path, name: str) -> None:
    url = database_url(name, tmp_path)
    db = fresh_db(url)
    seed(db)
    fuzz_app(in_process(db, tmp_path, url), db, SERVER_FUZZ)
    db.close()


def test_any_query_on_each_page(tmp_path: Path) -> None:
    """Every page with arbitrary values in its own query keys (the examples above mostly
    stop at the first check; these reach the database)."""
    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    seed(db)
    app = in_process(db, tmp_path, url)
    page_keys = {"/messages": ["status", "template", "app", "openid", "q", "before"],
                 "/grants": ["openid"], "/templates": ["preview", "params", "openid"],
                 "/login": ["next"], "/messages/4": [], "/": [], "/failures": []}

    @FUZZ
    @given(page=st.sampled_from(sorted(page_keys)), data=st.data())
    def one(page: str, data: st.DataObject) -> None:
        keys = page_keys[page]
        chosen = data.draw(st.lists(st.tuples(st.sampled_from(keys), values), max_size=4,
                                    unique_by=lambda kv: kv[0]) if keys else st.just([]))
        check(app, db, "GET", page.encode(), encode_pairs(chosen, False), b"", None)

    one()
    report(app, "page queries")
    db.close()


# each action field's own plausible values, mostly valid, so examples get past the
# first check to the dry run and the change
ACTION_VALUES = {
    "ids": st.lists(st.sampled_from(["4", "5", "6", "7", "1", "99999", " ", ","]),
                    max_size=4).map(",".join),
    "errcode": st.sampled_from(["47003", "43101", "0", "-1", ""]),
    "errcode_null": st.sampled_from(["1", ""]),
    "template": st.sampled_from(["order_status", "vip_pay_success", ""]),
    "app": st.sampled_from(["default", ""]), "openid": st.sampled_from(["o_fail", "o_wait"]),
    "back": st.sampled_from(["/failures", "/messages?status=fail", "/你", "/a b", "/%zz"]),
    "confirm": st.sampled_from(["1", ""]), "expected": st.sampled_from(["0", "1", "2"]),
    "scope": st.sampled_from(["filters", "ids"]),
}


def test_any_action_form(tmp_path: Path) -> None:
    """The two actions with a valid session and CSRF token and fuzzed fields: a dry run
    or a confirmed change (state may change then), or a 400 that changes nothing."""
    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    seed(db)
    app = in_process(db, tmp_path, url)
    @FUZZ
    @given(action=st.sampled_from(["retry", "cancel"]), data=st.data())
    def one(action: str, data: st.DataObject) -> None:
        keys = sorted(ACTION_VALUES) if action == "retry" else sorted(
            set(ACTION_VALUES) - {"errcode", "errcode_null"})
        chosen = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=5,
                                    unique=True))
        fields = [(k, data.draw(ACTION_VALUES[k])) for k in chosen]
        spoil = data.draw(st.one_of(st.none(), st.tuples(st.integers(0, len(fields) - 1),
                                                         values, st.booleans())))
        if spoil is not None:  # one field hostile, or one field the action does not take
            at, value, rename = spoil
            fields[at] = (data.draw(names) if rename else fields[at][0], value)
        body = encode_pairs([("csrf_token", app.csrf), *fields], False)
        check(app, db, "POST", f"/actions/{action}".encode(), b"", body, None)

    one()
    report(app, "action forms")
    db.close()


def test_any_login_form(tmp_path: Path) -> None:
    """The login form with its CSRF cookie right and every other field fuzzed (the
    limits raised so that examples reach the password check): a redirect home or to an
    encoded path here, or a 4xx page that creates no session."""
    from web.console import auth

    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    app = in_process(db, tmp_path, url)
    app.app.limiter = auth.LoginLimiter(per_user=10 ** 6, per_address=10 ** 6)
    login_values = {"username": st.one_of(st.sampled_from(["ann", "vic", "ANN", "nobody"]),
                                          values),
                    "password": st.one_of(st.just(PASSWORD), values),
                    "next": st.one_of(st.sampled_from(["/failures", "/messages?q=你", ""]),
                                      values)}

    @FUZZ
    @given(data=st.data(), extra=st.lists(st.tuples(names, values), max_size=2))
    def one(data: st.DataObject, extra: list[tuple[str, str]]) -> None:
        fields = [("csrf_token", "t" * 32)] + [(k, data.draw(v))
                                               for k, v in login_values.items()]
        check(app, db, "POST", b"/login", b"", encode_pairs(fields + extra, False),
              "herald_login=" + "t" * 32)

    one()
    report(app, "login forms")
    db.close()
