"""The console over plain HTTP: auth, sessions, CSRF, roles, actions, hostile input,
every page on every dialect, and no secret on any page.

The console runs in this process on a real waitress listener (web.server.Listener, as
`serve` runs it); the browser tests (test_console_browser.py) drive a real `serve`.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from config import config_from_dict
from db.dialects import dialect
from tests.conftest import database_url
from tests.console_support import (
    ACCESS_TOKEN,
    MARKERS,
    PASSWORD,
    Seeded,
    console,
    console_data,
    csrf_of,
    fresh_db,
    insert,
    login,
    page_csrf,
    seed,
)
from tests.support import ROOT, clean_env, wait_for
from web.console import auth
from web.console.chart import nice_ceiling, sends_svg

PAGES = ("/", "/messages", "/failures", "/templates", "/grants?openid=o_user0", "/daemons",
         "/templates?preview=order_status", "/messages?status=fail",
         "/messages?status=wait", "/messages?openid=o_fail", "/messages?q=order-1",
         "/messages?template=order_status&app=default", "/grants")


@pytest.fixture
def world(tmp_path: Path):
    """A seeded SQLite database and the console on it: (base URL, Seeded, db)."""
    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    seeded = seed(db)
    with console(db, tmp_path, url) as base:
        yield base, seeded, db
    db.close()


def status_of(db: Any, row_id: int) -> str:
    p = dialect(db).param
    return str(db.execute_sql(f"SELECT status FROM msg_list WHERE id = {p}",
                              (row_id,)).fetchone()[0])


# ------------------------------------------------------------------ passwords


def test_hash_format_and_verify() -> None:
    encoded = auth.hash_password("s3cret-password")
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", encoded)
    assert auth.verify_password("s3cret-password", encoded)
    assert not auth.verify_password("s3cret-passwore", encoded)
    assert not auth.verify_password("s3cret-password", "scrypt$garbage")
    assert not auth.verify_password("s3cret-password", None)
    assert auth.hash_password("x" * 8) != auth.hash_password("x" * 8)  # salted


@pytest.mark.parametrize("bad", ["scrypt$3$8$1$AAAA$AAAA", "scrypt$16384$8$1$!!$AAAA",
                                 f"scrypt${2 ** 22}$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
                                 "bcrypt$x", ""])
def test_malformed_hashes_refused(bad: str) -> None:
    with pytest.raises(auth.BadHash):
        auth.parse_hash(bad)
    assert not auth.verify_password("anything", bad)


def test_console_password_verb_prints_a_hash_config_accepts(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scheduler.py"), "console-password"],
                         input="a long passphrase\n", capture_output=True, text=True,
                         cwd=ROOT, env=clean_env(), timeout=60)
    assert res.returncode == 0, res.stderr
    encoded = res.stdout.strip()
    assert auth.verify_password("a long passphrase", encoded)
    users = {"ann": {"password_hash": encoded, "role": "operator"}}
    cfg = config_from_dict(console_data(tmp_path, "sqlite:///x.db", console={"users": users}),
                           base_dir=tmp_path, env={})
    assert cfg.console.users["ann"].password_hash.reveal() == encoded
    short = subprocess.run([sys.executable, str(ROOT / "scheduler.py"), "console-password"],
                           input="short\n", capture_output=True, text=True, cwd=ROOT,
                           env=clean_env(), timeout=60)
    assert short.returncode == 2 and "8 to 1024 characters" in short.stderr
    assert short.stdout == ""


# ------------------------------------------------------------------ sessions, limits


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_sessions_expire_and_ids_are_not_stored() -> None:
    clock = FakeClock()
    store = auth.SessionStore(60, clock=clock)
    sid, session = store.create("ann", "operator")
    assert store.get(sid) is session
    assert sid not in repr(store._sessions)  # only its hash is kept
    clock.t += 59
    assert store.get(sid) is session
    clock.t += 2
    assert store.get(sid) is None
    assert store.get("") is None and store.get("x" * 500) is None


def test_login_limiter_per_user_and_per_address() -> None:
    clock = FakeClock()
    limiter = auth.LoginLimiter(per_user=5, per_address=20, window=900, clock=clock)

    def fail(user: str, address: str) -> None:
        attempt = limiter.attempt(user, address)
        assert isinstance(attempt, auth.Attempt), attempt
        limiter.failed(attempt)

    for _ in range(5):
        fail("ann", "10.0.0.1")
    why = limiter.attempt("ann", "10.0.0.2")
    assert isinstance(why, str) and "this user" in why and "15 minutes" in why
    fail("bob", "10.0.0.1")  # another user from the same place
    for i in range(14):
        fail(f"user{i}", "10.0.0.1")
    why = limiter.attempt("carol", "10.0.0.1")
    assert isinstance(why, str) and "your address" in why
    assert isinstance(limiter.attempt("carol", "10.0.0.3"), auth.Attempt)
    clock.t += 901
    assert isinstance(limiter.attempt("ann", "10.0.0.1"), auth.Attempt)


# ------------------------------------------------------------------ guests


def test_a_guest_sees_only_the_login_page_and_assets(world) -> None:
    base, seeded, db = world
    for path in ("/", "/messages", f"/messages/{seeded.failed[0]}", "/failures", "/daemons",
                 "/grants?openid=o_user0", "/no/such/page", "/static/../app.py"):
        r = requests.get(base + path, allow_redirects=False, timeout=10)
        assert r.status_code == 303, path
        assert r.headers["Location"].startswith("/login"), path
        assert "o_fail" not in r.text
    r = requests.get(base + f"/messages/{seeded.failed[0]}", allow_redirects=False, timeout=10)
    assert r.headers["Location"] == f"/login?next=/messages/{seeded.failed[0]}"
    css = requests.get(base + "/static/console.css", timeout=10)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert requests.get(base + "/static/nothing.css", timeout=10).status_code == 404
    forged = requests.post(base + "/actions/retry", data={"ids": str(seeded.failed[0]),
                                                          "confirm": "1"},
                           allow_redirects=False, timeout=10)
    assert forged.status_code == 303 and forged.headers["Location"] == "/login"
    assert status_of(db, seeded.failed[0]) == "fail"


def test_login_sets_a_strict_httponly_cookie_and_goes_back(world) -> None:
    base, seeded, _ = world
    s = requests.Session()
    form = s.get(base + "/login?next=/failures", timeout=10)
    assert 'name="username"' in form.text and 'name="password"' in form.text
    r = s.post(base + "/login", allow_redirects=False, timeout=30, data={
        "username": "ann", "password": PASSWORD, "next": "/failures",
        "csrf_token": s.cookies["herald_login"]})
    assert r.status_code == 303 and r.headers["Location"] == "/failures"
    cookie = next(v for k, v in r.raw.headers.items() if k.lower() == "set-cookie"
                  and v.startswith("herald_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert "Max-Age=43200" in cookie
    page = s.get(base + "/", timeout=10)
    assert page.status_code == 200 and "ann · operator" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


def test_cookie_secure_adds_secure(tmp_path: Path) -> None:
    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    with console(db, tmp_path, url, console={"cookie_secure": True}) as base:
        # requests keeps Secure cookies off plain http: read and send them by hand
        form = requests.get(base + "/login", timeout=10)
        assert "Secure" in form.headers["Set-Cookie"]
        found = re.search(r"herald_login=([^;]+)", form.headers["Set-Cookie"])
        assert found is not None, form.headers["Set-Cookie"]
        token = found.group(1)
        r = requests.post(base + "/login", allow_redirects=False, timeout=30, data={
            "username": "ann", "password": PASSWORD, "csrf_token": token},
            headers={"Cookie": f"herald_login={token}"})
        cookie = next(v for k, v in r.raw.headers.items() if k.lower() == "set-cookie"
                      and v.startswith("herald_session="))
        assert "Secure" in cookie


def test_wrong_password_and_login_without_its_csrf_token(world) -> None:
    base, _, _ = world
    s = requests.Session()
    s.get(base + "/login", timeout=10)
    wrong = s.post(base + "/login", timeout=30, data={
        "username": "ann", "password": "nope", "csrf_token": s.cookies["herald_login"]})
    assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
    unknown = s.post(base + "/login", timeout=30, data={
        "username": "nobody", "password": "nope", "csrf_token": s.cookies["herald_login"]})
    assert unknown.status_code == 401 and unknown.text.count("wrong user name") == 1
    forged = requests.post(base + "/login", timeout=30, allow_redirects=False,
                           data={"username": "ann", "password": PASSWORD})
    assert forged.status_code == 403 and "herald_session" not in forged.headers.get(
        "Set-Cookie", "")


def test_login_is_rate_limited(world) -> None:
    base, _, _ = world
    s = requests.Session()
    s.get(base + "/login", timeout=10)
    for _ in range(5):
        r = s.post(base + "/login", timeout=30, data={
            "username": "ann", "password": "guess", "csrf_token": s.cookies["herald_login"]})
        assert r.status_code == 401
    r = s.post(base + "/login", timeout=30, allow_redirects=False, data={
        "username": "ann", "password": PASSWORD, "csrf_token": s.cookies["herald_login"]})
    assert r.status_code == 429
    assert "too many failed logins for this user" in r.text and "分钟后再试" in r.text
    login(base, "vic")  # another user is not locked out


def test_logout_needs_csrf_and_ends_the_session(world) -> None:
    base, _, _ = world
    s = login(base)
    assert s.post(base + "/logout", timeout=10, allow_redirects=False).status_code == 403
    token = page_csrf(s, base)
    r = s.post(base + "/logout", data={"csrf_token": token}, timeout=10, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/login"
    assert s.get(base + "/", allow_redirects=False, timeout=10).status_code == 303


# ------------------------------------------------------------------ CSRF and roles


def test_a_post_without_the_csrf_token_is_refused(world) -> None:
    base, seeded, db = world
    s = login(base)
    row = seeded.failed[0]
    for data in ({"ids": str(row), "confirm": "1"},
                 {"ids": str(row), "confirm": "1", "csrf_token": "forged"},
                 {"ids": str(row), "confirm": "1", "csrf_token": ""}):
        r = s.post(base + "/actions/retry", data=data, timeout=10, allow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text
    # another user's token is no good either
    other = page_csrf(login(base, "vic"), base)
    r = s.post(base + "/actions/retry", data={"ids": str(row), "confirm": "1",
                                              "csrf_token": other}, timeout=10)
    assert r.status_code == 403
    assert status_of(db, row) == "fail"


def test_a_viewer_sees_everything_and_changes_nothing(world) -> None:
    base, seeded, db = world
    s = login(base, "vic")
    for path in PAGES + (f"/messages/{seeded.failed[0]}",):
        r = s.get(base + path, timeout=10)
        assert r.status_code == 200, path
        assert 'action="/actions/' not in r.text, path
    assert "o_fail" in s.get(base + "/failures", timeout=10).text
    token = page_csrf(s, base)
    for action, row in (("retry", seeded.failed[0]), ("cancel", seeded.waiting[0])):
        r = s.post(base + f"/actions/{action}", timeout=10, allow_redirects=False,
                   data={"ids": str(row), "csrf_token": token, "confirm": "1"})
        assert r.status_code == 403 and "operator" in r.text
    assert status_of(db, seeded.failed[0]) == "fail"
    assert status_of(db, seeded.waiting[0]) == "wait"


def test_operator_re_drive_dry_run_then_confirm(world) -> None:
    base, seeded, db = world
    s = login(base)
    page = s.get(base + "/failures", timeout=10).text
    assert 'action="/actions/retry"' in page
    token = csrf_of(page)
    dry = s.post(base + "/actions/retry", timeout=10, data={
        "csrf_token": token, "errcode": "47003", "template": "order_status",
        "back": "/failures"})
    assert dry.status_code == 200
    assert re.search(r'data-count="dry-run">2<', dry.text)
    assert status_of(db, seeded.failed[0]) == "fail"  # a dry run changes nothing
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', dry.text))
    assert fields["confirm"] == "1" and fields["expected"] == "2"
    done = s.post(base + "/actions/retry", data=fields, timeout=10, allow_redirects=False)
    assert done.status_code == 303 and done.headers["Location"] == "/failures"
    assert all(status_of(db, i) == "wait" for i in seeded.failed)
    note = s.get(base + "/failures", timeout=10).text
    assert "re-drove 2 rows" in note
    history = s.get(base + f"/messages/{seeded.failed[0]}", timeout=10).text
    assert "re-driven by console:ann" in history


def test_operator_cancels_waiting_rows_and_ids_that_cannot_are_explained(world) -> None:
    base, seeded, db = world
    s = login(base)
    page = s.get(base + "/messages?status=wait", timeout=10).text
    assert 'action="/actions/cancel"' in page
    ids = f"{seeded.waiting[0]},{seeded.success[0]},999999"
    dry = s.post(base + "/actions/cancel", timeout=10, data={
        "csrf_token": csrf_of(page), "ids": ids, "back": "/messages?status=wait"})
    assert re.search(r'data-count="dry-run">1<', dry.text)
    assert "it was delivered already" in dry.text and "no such row" in dry.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', dry.text))
    s.post(base + "/actions/cancel", data=fields, timeout=10)
    assert status_of(db, seeded.waiting[0]) == "cancelled"
    assert status_of(db, seeded.waiting[1]) == "wait"
    assert status_of(db, seeded.success[0]) == "success"


def test_an_empty_selection_is_refused(world) -> None:
    base, seeded, db = world
    s = login(base)
    token = page_csrf(s, base)
    for action in ("retry", "cancel"):
        r = s.post(base + f"/actions/{action}", data={"csrf_token": token, "confirm": "1"},
                   timeout=10)
        assert r.status_code == 400 and "name the rows" in r.text
    assert status_of(db, seeded.waiting[0]) == "wait"


def test_failed_rows_without_errcode_are_re_driven_by_id(world) -> None:
    base, seeded, db = world
    row = insert(db, template="order_status", openid="o_x", params="not json", status="fail",
                 error="params is not JSON")
    s = login(base)
    page = s.get(base + "/failures", timeout=10).text
    assert 'name="errcode_null" value="1"' in page
    dry = s.post(base + "/actions/retry", timeout=10, data={
        "csrf_token": csrf_of(page), "errcode_null": "1", "template": "order_status"})
    assert re.search(r'data-count="dry-run">1<', dry.text) and f"#{row}" in dry.text


# ------------------------------------------------------------------ pages


def test_overview_numbers(world) -> None:
    base, seeded, _ = world
    text = login(base).get(base + "/", timeout=10).text

    def count(name: str) -> str:
        m = re.search(rf'data-count="{name}">([^<]*)<', text)
        assert m, name
        return m.group(1)

    assert count("success") == "3" and count("fail") == "3" and count("wait") == "2"
    assert count("cancelled") == "2" and count("total") == "10" and count("due") == "0"
    assert count("delivered") == "1" and count("receipt-failed") == "1"
    assert count("missing") == "1"  # sent 42 minutes ago, receipts.missing_after is 30m
    assert 'data-errcode="47003">2<' in text and 'data-errcode="43101">1<' in text
    assert "<svg" in text and "<script" not in text


def test_messages_search_and_keyset_paging(world) -> None:
    base, seeded, db = world
    s = login(base)
    by_openid = s.get(base + "/messages?openid=o_fail", timeout=10).text
    assert all(f'data-id="{i}"' in by_openid for i in seeded.failed)
    assert f'data-id="{seeded.success[0]}"' not in by_openid
    for q in ("order-1", "30000000001", str(seeded.success[1])):
        found = s.get(base + "/messages", params={"q": q}, timeout=10).text
        assert f'data-id="{seeded.success[1]}"' in found, q
        assert found.count('<tr data-id="') == 1, q
    for _ in range(60):
        insert(db, template="order_status", openid="o_many", params="[]", status="cancelled")
    first = s.get(base + "/messages?openid=o_many", timeout=10).text
    ids = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', first)]
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older
    second = s.get(base + older.group(1).replace("&amp;", "&"), timeout=10).text
    rest = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', second)]
    assert len(rest) == 10 and max(rest) < min(ids)
    window = s.get(base + "/messages?template=order_status", timeout=10).text
    assert "Searched ids" in window


def test_one_message_page(world) -> None:
    base, seeded, _ = world
    s = login(base)
    text = html.unescape(s.get(base + f"/messages/{seeded.success[0]}", timeout=10).text)
    for column in ("dedup_key", "msgid", "receipt_at", "lease_until", "parent_id"):
        assert f'data-col="{column}"' in text
    assert "claimed by test-daemon" in text and "accepted, msgid 30000000000" in text
    assert '"touser": "o_user0"' in text and "access token not shown" in text
    assert ACCESS_TOKEN not in text and "access_token=" not in text
    chain = s.get(base + f"/messages/{seeded.hop_child}", timeout=10).text
    assert f'href="/messages/{seeded.hop_parent}"' in chain and 'aria-current="true"' in chain
    parent = s.get(base + f"/messages/{seeded.hop_parent}", timeout=10).text
    assert f'href="/messages/{seeded.hop_child}"' in parent


def test_templates_grants_daemons(world) -> None:
    base, _, _ = world
    s = login(base)
    t = s.get(base + "/templates?preview=order_status", timeout=10).text
    assert "order_status" in t and "vip_pay_success" in t and 'data-preview="ok"' in t
    assert 'data-valid="file"' in t and "thing2" in t
    # each data key with the type its name gives it (the subscribe channel's rule)
    for key, kind in (("thing2", "thing"), ("amount3", "amount"), ("thing11", "thing")):
        assert f'<td class="mono">{key}</td><td>{kind}</td>' in t, key
    bad = s.get(base + "/templates", params={"preview": "order_status", "params": "[1]"},
                timeout=10).text
    assert 'data-preview="error"' in bad and "missing" in bad
    g = s.get(base + "/grants?openid=o_user0", timeout=10).text
    assert "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc" in g and ">2<" in g
    d = s.get(base + "/daemons", timeout=10).text
    assert "host:1:run" in d and "token refresh failing" in d and "(hidden)" in d


def test_rows_nobody_can_read_do_not_break_a_page(world) -> None:
    base, _, db = world
    # an application wrote raw bytes and odd values (SQLite keeps what it is given)
    rid = insert(db, template="order_status", openid=b"\xff\xfe-not-utf8", params=b"\x80[",
                 status="fail", errcode=47003)
    db.execute_sql("UPDATE msg_list SET sent_at = 'yesterday-ish', attempts = 'many', "
                   "receipt_at = x'ff00' WHERE id = ?", (rid,))
    s = login(base)
    for path in ("/", "/messages", f"/messages/{rid}", "/failures", "/messages?status=fail",
                 "/messages?openid=o_fail"):
        r = s.get(base + path, timeout=10)
        assert r.status_code == 200, path
    detail = s.get(base + f"/messages/{rid}", timeout=10).text
    assert "unreadable" in detail and "not valid UTF-8" in detail
    # JSON escapes of lone surrogates: valid JSON, rendered into text no UTF-8 can hold
    odd = insert(db, template="order_status", openid="o_odd", status="fail", errcode=1,
                 params='["\\ud800 tea", 28, "x\\udfff", "y"]')
    r = s.get(base + f"/messages/{odd}", timeout=10)
    assert r.status_code == 200 and "\\ud800 tea" in r.text


def test_page_content_is_escaped(world) -> None:
    base, _, db = world
    rid = insert(db, template="<script>alert(1)</script>", openid='o"><img src=x>',
                 params="[]", status="fail", errcode=1, error="<b>bold</b>")
    s = login(base)
    for path in (f"/messages/{rid}", "/failures", "/", "/messages?status=fail"):
        text = s.get(base + path, timeout=10).text
        assert "<script>alert" not in text and "<img src=x>" not in text, path
        assert "<b>bold" not in text, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in s.get(base + f"/messages/{rid}").text


# ------------------------------------------------------------------ hostile input


HOSTILE = [
    ("/messages?q=" + "x" * 20000, 400),
    ("/messages?q=" + "x" * 192, 400),
    ("/messages/abc", 400),
    ("/messages/-1", 400),
    ("/messages/0", 400),
    ("/messages/99999999999999999999999", 400),
    ("/messages/%D9%A3", 400),  # an Arabic-Indic digit is no id
    ("/messages/12345678", 404),
    ("/messages/%FF", 400),
    ("/%C0%AF", 400),
    ("/messages?openid=%FF%FE", 400),
    ("/messages?openid=o%00x", 400),
    ("/messages?template=a%0Ab", 400),
    ("/messages?status=sent", 400),
    ("/messages?before=1e9", 400),
    ("/messages?before=-5", 400),
    ("/messages?" + "&".join(f"f{i}=1" for i in range(60)), 400),
    ("/messages?template=%27%20OR%201%3D1%20--", 200),
    ("/messages?openid=x%27%3B%20DROP%20TABLE%20msg_list%3B%20--", 200),
    ("/messages?q=%25%27%20OR%20%27%25%27%3D%27", 200),
    ("/messages?app=default%22%3E%3Cscript%3E", 200),
    ("/grants?openid=" + "o" * 129, 400),
    ("/templates?preview=no_such_template", 400),
    ("/templates?preview=order_status&params=" + "1" * 9000, 400),
    ("/templates?preview=order_status&params=%7B%22a%22%3A", 200),
    ("/nope", 404),
    ("/static/", 404),
]


@pytest.mark.parametrize(("path", "expected"), HOSTILE)
def test_hostile_requests_get_a_clear_4xx(world, path: str, expected: int) -> None:
    base, _, db = world
    s = login(base)
    r = s.get(base + path, timeout=10, allow_redirects=False)
    assert r.status_code == expected, (path, r.text[:400])
    assert "Traceback" not in r.text
    if expected == 400:
        assert 'class="alert"' in r.text
    assert int(db.execute_sql("SELECT COUNT(*) FROM msg_list").fetchone()[0]) == 10


def test_hostile_posts(world) -> None:
    base, seeded, db = world
    s = login(base)
    token = page_csrf(s, base)
    cases = [
        ({"csrf_token": token, "ids": "1; DELETE FROM msg_list"}, 400),
        ({"csrf_token": token, "ids": ",".join(["1"] * 6000)}, 400),
        ({"csrf_token": token, "errcode": "x"}, 400),
        ({"csrf_token": token, "errcode": "99999999999"}, 400),
        ({"csrf_token": token, "template": "a\x00b"}, 400),
    ]
    for data, expected in cases:
        r = s.post(base + "/actions/retry", data=data, timeout=10)
        assert r.status_code == expected, (data, r.text[:300])
    big = s.post(base + "/actions/retry", data={"csrf_token": token, "x": "y" * 70000},
                 timeout=10)
    assert big.status_code == 400 and "too large" in big.text
    weird = s.post(base + "/actions/retry", data=b"csrf_token=%FF%FE", timeout=10,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert weird.status_code == 400 and "UTF-8" in weird.text
    as_json = s.post(base + "/actions/retry", json={"csrf_token": token}, timeout=10)
    assert as_json.status_code == 400
    assert s.put(base + "/messages", timeout=10).status_code == 405
    assert status_of(db, seeded.failed[0]) == "fail"


def test_a_broken_database_gives_503_not_a_traceback(world) -> None:
    base, _, db = world
    s = login(base)
    db.execute_sql("ALTER TABLE msg_event RENAME TO msg_event_gone")
    r = s.get(base + "/messages/1", timeout=10)
    assert r.status_code in (500, 503) and "Traceback" not in r.text
    assert "the serve log has the details" in r.text


# ------------------------------------------------------------------ secrets, dialects


def all_pages(s: requests.Session, base: str, seeded: Seeded) -> dict[str, str]:
    out = {}
    for path in (*PAGES, *(f"/messages/{i}" for i in (*seeded.success, *seeded.failed,
                                                       seeded.hop_child))):
        r = s.get(base + path, timeout=30)
        assert r.status_code == 200, (path, r.text[:500])
        out[path] = r.text
    token = csrf_of(out["/"])
    dry = s.post(base + "/actions/retry", data={"csrf_token": token, "errcode": "47003"},
                 timeout=30)
    assert dry.status_code == 200
    out["confirm"] = dry.text
    out["login"] = requests.get(base + "/login", timeout=10).text
    out["error"] = s.get(base + "/messages/abc", timeout=10).text
    return out


def test_no_page_shows_a_secret(world) -> None:
    base, seeded, _ = world
    pages = all_pages(login(base), base, seeded)
    for path, text in pages.items():
        for marker in MARKERS:
            assert marker not in text, (marker, path)
        assert "scrypt$" not in text, path


@pytest.mark.parametrize("name", ["sqlite", "postgres", "mysql"])
def test_every_page_on_each_dialect(tmp_path: Path, name: str) -> None:
    url = database_url(name, tmp_path)
    db = fresh_db(url)
    seeded = seed(db)
    with console(db, tmp_path, url) as base:
        s = login(base)
        pages = all_pages(s, base, seeded)
        assert re.search(r'data-count="success">3<', pages["/"])
        assert re.search(r'data-count="delivered">1<', pages["/"])
        assert "3 sent" in pages["/"]  # three sends in the chart's window
        assert all(f'data-id="{i}"' in pages["/messages?openid=o_fail"] for i in seeded.failed)
        for text in pages.values():
            assert not any(m in text for m in MARKERS)
        token = csrf_of(pages["/"])
        s.post(base + "/actions/retry", timeout=30, data={
            "csrf_token": token, "ids": str(seeded.failed[0]), "confirm": "1"})
        assert status_of(db, seeded.failed[0]) == "wait"
    db.close()


# ------------------------------------------------------------------ the chart


def test_chart() -> None:
    from datetime import UTC, datetime

    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 11, 99, 101, 4000)] == [
        1, 1, 5, 10, 20, 100, 200, 5000]
    start = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    svg = str(sends_svg([0] * 1440, start))
    assert "no sends" in svg and "<path" not in svg
    minutes = [0] * 1440
    minutes[60] = 7
    svg = str(sends_svg(minutes, start))
    assert "<path" in svg and "7 sent" in svg and "peak 7/min at 01:00" in svg
    assert "03:00" in svg and "<script" not in svg and "style=" not in svg


def test_snapshot_cache_serves_stale_then_refreshes_in_the_background() -> None:
    import threading
    from datetime import UTC, datetime

    from web.console.overview import Snapshot, SnapshotCache

    clock = FakeClock()
    calls: list[int] = []
    release = threading.Event()

    def compute() -> Snapshot:
        calls.append(1)
        if len(calls) > 1:
            release.wait(10)
        return Snapshot(at=datetime.now(UTC), took=len(calls) * 0.1, totals={"wait": len(calls)},
                        grid=[], grid_capped=False, failures=[], chart_start=datetime.now(UTC),
                        per_minute=[], receipts={}, oldest_due=None, due=0)

    cache = SnapshotCache(compute, ttl=10, clock=clock)
    assert cache.get().totals == {"wait": 1}
    clock.t += 11
    assert cache.get().totals == {"wait": 1}  # stale, at once; a refresh has started
    release.set()
    assert wait_for(lambda: cache.get().totals == {"wait": 2}, 10)
    clock.t += 11  # within max(ttl, 10 x took=0.2 s): still fresh enough
    cache.invalidate()
    assert cache.get().totals == {"wait": 3}  # after an action: computed now


def test_a_heartbeat_row_with_garbage_does_not_break_the_daemons_page(world) -> None:
    base, _, db = world
    db.execute_sql("INSERT INTO herald_daemon (daemon_id, role, host, pid, version, info) "
                   "VALUES ('odd', 'run', 'h', 'not-a-pid', 'x', 'not json')")
    # valid JSON whose strings hold lone surrogates: no UTF-8 page can hold them as such
    db.execute_sql("INSERT INTO herald_daemon (daemon_id, role, host, pid, version, info) "
                   "VALUES ('odd2', 'run', 'h', 3, 'x', ?)",
                   ('{"alerts": ["\\ud800 alert"], "note": "\\udfff note"}',))
    r = login(base).get(base + "/daemons", timeout=10)
    assert r.status_code == 200 and "odd" in r.text and "host:1:run" in r.text
    assert "\\ud800 alert" in r.text and "\\udfff note" in r.text
