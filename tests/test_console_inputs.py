"""Never a 500 from input: every route and action of the console, with malformed query
values, form fields, ids, cookies and redirect targets, over raw HTTP to a real waitress
listener, on SQLite, PostgreSQL and MariaDB (a NUL reaches PostgreSQL as an error, a
4-byte character MariaDB's utf8mb4).

Each malformed input gets a 4xx page with the reason (never a traceback), and a
refused request changes nothing: the rows, their history, the session. A redirect
target (`next=` after login, `back=` after an action) is a path on this console,
percent-encoded; anything else is refused before the action, not after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.conftest import database_url
from tests.console_support import (
    PASSWORD,
    Answer,
    Seeded,
    console,
    fresh_db,
    in_process,
    login,
    page_csrf,
    raw_request,
    same_origin,
    seed,
    state_of,
)


@dataclass
class Site:
    base: str
    db: Any
    seeded: Seeded
    cookie: str  # the operator's session cookie, as a Cookie header
    csrf: str
    name: str

    def get(self, target: bytes, **kw: Any) -> Answer:
        return raw_request(self.base, "GET", target, cookie=kw.pop("cookie", self.cookie),
                           **kw)

    def post(self, target: bytes, body: bytes, **kw: Any) -> Answer:
        return raw_request(self.base, "POST", target, body=body,
                           cookie=kw.pop("cookie", self.cookie), **kw)


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    url = database_url(request.param, tmp_path)
    db = fresh_db(url)
    seeded = seed(db)
    with console(db, tmp_path, url) as base:
        s = login(base)
        yield Site(base, db, seeded, f"herald_session={s.cookies['herald_session']}",
                   page_csrf(s, base), request.param)
    db.close()


def refused(answer: Answer, status: int = 400) -> None:
    assert answer.status == status, (answer.status, answer.text[:400])
    assert 'class="alert"' in answer.text and "Traceback" not in answer.text
    assert "set-cookie" not in answer.headers or "herald_session=" not in answer.headers[
        "set-cookie"]


# ------------------------------------------------------------------ query values

NUL = b"%00"
# (raw bytes past ASCII in a request line never reach the console over HTTP: waitress
# answers "Bad URI" itself; test_raw_bytes_in_the_request_line sends them in process)
BAD_UTF8 = (b"%FF", b"%C0%AF", b"%ED%A0%80", b"%E4%BD")  # overlong, surrogate, cut short
FIELDS = [(b"/messages", b"openid"), (b"/messages", b"q"), (b"/messages", b"template"),
          (b"/messages", b"app"), (b"/messages", b"status"), (b"/messages", b"before"),
          (b"/grants", b"openid"), (b"/templates?preview=order_status&", b"openid"),
          (b"/templates", b"preview"), (b"/templates?preview=order_status&", b"params"),
          (b"/login", b"next")]


def _url(path: bytes, name: bytes, value: bytes) -> bytes:
    return path + (b"" if path.endswith(b"&") else b"?") + name + b"=" + value


QUERY_REFUSED: list[bytes] = [
    *(_url(p, n, b"o" + NUL + b"x") for p, n in FIELDS),
    *(_url(p, n, bad) for p, n in FIELDS for bad in BAD_UTF8),
    *(_url(p, n, b"a&" + n + b"=b") for p, n in FIELDS),  # a key given twice
    b"/messages?openid=" + b"o" * 129, b"/messages?q=" + b"x" * 192,
    b"/messages?q=" + b"x" * 20000, b"/grants?openid=" + b"o" * 129,
    b"/templates?preview=order_status&params=" + b"1" * 9000,
    b"/messages?before=9223372036854775808", b"/messages?before=0",
    b"/messages?before=-1", b"/messages?before=1e3", b"/messages?before=%EF%BC%91",
    b"/messages?status=sent", b"/messages?status=FAIL",
    b"/messages?" + b"&".join(b"f%d=1" % i for i in range(60)),
    b"/messages?template=a%0Ab", b"/messages?openid=o%E2%80%A8x",  # a line separator
    b"/templates?preview=no_such_template",
    # redirect targets that are no path on this console
    b"/login?next=//evil.example/", b"/login?next=https://evil.example/",
    b"/login?next=/%5Cevil.example", b"/login?next=%5C%5Cevil.example",
    b"/login?next=javascript:alert(1)", b"/login?next=/a%0D%0ALocation:%20//evil",
    b"/login?next=/" + b"a" * 3000,
]
# paths
PATH_REFUSED: list[tuple[bytes, int]] = [
    (b"/messages/%00", 400), (b"/messages/1%00", 400), (b"/messages/%FF", 400),
    (b"/messages/%ED%A0%80", 400), (b"/%C0%AF", 400), (b"/messages/abc", 400),
    (b"/messages/0", 400), (b"/messages/-1", 400), (b"/messages/9223372036854775808", 400),
    (b"/messages/%D9%A3", 400), (b"/messages/9223372036854775807", 404),
    (b"/messages/%E4%BD%A0", 400), (b"/nope%00", 404), (b"/static/%00", 404),
    (b"/static/..%2Fapp.py", 404),
]
QUERY_FINE: list[bytes] = [
    b"/messages?openid=%E4%BD%A0",
    b"/messages?q=%F0%9F%98%80", b"/messages?q=" + b"9" * 191,
    b"/messages?template=%F0%9F%98%80&app=%F0%9F%98%80&status=fail",
    b"/messages?status=wait&openid=%F0%9F%98%80&before=9223372036854775807",
    b"/messages?before=9223372036854775807", b"/messages?q=9223372036854775807",
    b"/grants?openid=%F0%9F%98%80", b"/messages?openid=%27%20OR%201%3D1%20--",
    b"/templates?preview=order_status&params=%5B%22%5Cud800%22%2C1%2C2%2C3%5D",
    b"/templates?preview=order_status&params=%5B%22%5Cu0000%22%2C1%2C2%2C3%5D",
    b"/templates?preview=order_status&params=" + b"%5B" * 2000,
    b"/templates?preview=order_status&openid=%F0%9F%98%80",
    b"/login?next=/messages%3Fopenid%3D%25E4%25BD%25A0",
]


def test_malformed_query_values_and_paths_get_a_4xx_page(site: Site) -> None:
    before = state_of(site.db)
    failures = []
    for target in QUERY_REFUSED:
        got = site.get(target)
        if got.status != 400 or 'class="alert"' not in got.text or "Traceback" in got.text:
            failures.append((target[:80], got.status, got.text[-300:]))
    for target, status in PATH_REFUSED:
        got = site.get(target)
        if got.status != status or "Traceback" in got.text:
            failures.append((target[:80], got.status, got.text[-300:]))
    assert not failures, failures
    assert state_of(site.db) == before
    print(f"\n{site.name}: {len(QUERY_REFUSED) + len(PATH_REFUSED)} malformed queries "
          "and paths refused")


def test_odd_but_valid_query_values_are_searched(site: Site) -> None:
    for target in QUERY_FINE:
        got = site.get(target)
        assert got.status == 200, (target[:80], got.text[-400:])
        assert "Traceback" not in got.text


def test_a_login_page_keeps_next_percent_encoded(site: Site) -> None:
    page = site.get(b"/login?next=/%E4%BD%A0%3Fq%3D%F0%9F%98%80", cookie=None)
    assert page.status == 200
    assert 'name="next" value="/%E4%BD%A0?q=%F0%9F%98%80"' in page.text


# ------------------------------------------------------------------ guests and next


def test_a_guest_comes_back_to_a_non_ascii_address_after_login(site: Site) -> None:
    s = requests.Session()
    first = raw_request(site.base, "GET", b"/messages?openid=%E4%BD%A0&status=fail")
    assert first.status == 303 and same_origin(first.location), first.location
    assert first.location == "/login?next=" + quote(
        "/messages?openid=%E4%BD%A0&status=fail", safe="/")
    form = s.get(site.base + str(first.location), timeout=10)
    assert 'name="next" value="/messages?openid=%E4%BD%A0&amp;status=fail"' in form.text
    done = s.post(site.base + "/login", allow_redirects=False, timeout=30, data={
        "username": "ann", "password": PASSWORD, "csrf_token": s.cookies["herald_login"],
        "next": "/messages?openid=%E4%BD%A0&status=fail"})
    assert done.status_code == 303
    assert done.headers["Location"] == "/messages?openid=%E4%BD%A0&status=fail"
    page = s.get(site.base + done.headers["Location"], timeout=10)
    assert page.status_code == 200 and 'value="你"' in page.text
    for target in (b"/%E4%BD%A0/x%00y?a=%E4%BD%A0", b"/messages?a=\x00b&c=%20d%zz",
                   b"/messages/%2F%2Fevil.example", b"//evil.example/x"):
        raw = raw_request(site.base, "GET", target)
        assert raw.status == 303 and same_origin(raw.location), (target, raw.location)
    # a query that is not even UTF-8 is refused before the session is looked at
    assert raw_request(site.base, "GET", b"/messages?a=%FF").status == 400


def test_raw_bytes_in_the_request_line(site: Site, tmp_path: Path) -> None:
    """Over HTTP waitress refuses them; another server could pass them on (PEP 3333
    allows any byte), so the app is called with them directly too."""
    for target in (b"/messages?openid=\xff", b"/messages?openid=\xe4\xbd\xa0", b"/\xe4\xbd\xa0"):
        assert site.get(target).status == 400
    if site.name != "sqlite":
        return  # the rest is no engine's business
    app = in_process(site.db, tmp_path, f"sqlite:///{tmp_path / 'herald.db'}")
    for path, query in ((b"/messages", b"openid=\xff"), (b"/messages", b"q=\xc0\xaf"),
                        (b"/messages/\xff", b""), (b"/\xff", b""),
                        (b"/login", b"next=/\xff")):
        got = app("GET", path, query)
        assert got.status == 400 and 'class="alert"' in got.text, (path, query)
    fine = app("GET", b"/messages", b"openid=\xe4\xbd\xa0")
    assert fine.status == 200 and 'value="你"' in fine.text
    guest = app("GET", b"/messages", b"openid=\xe4\xbd\xa0&x=\x00 y", cookie="")
    assert guest.location == "/login?next=" + quote("/messages?openid=%E4%BD%A0&x=%00%20y",
                                                    safe="/")
    guest = app("GET", "/你好".encode(), b"", cookie="")
    assert guest.location == "/login?next=" + quote("/%E4%BD%A0%E5%A5%BD", safe="/")


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/",
                                    "/\\evil.example", "javascript:alert(1)",
                                    "/a\r\nSet-Cookie: x=1", "/a\x00b", "http:/evil"])
def test_login_with_an_off_site_next_is_refused_and_logs_nobody_in(site: Site,
                                                                   target: str) -> None:
    s = requests.Session()
    s.get(site.base + "/login", timeout=10)
    r = s.post(site.base + "/login", allow_redirects=False, timeout=30, data={
        "username": "ann", "password": PASSWORD, "next": target,
        "csrf_token": s.cookies["herald_login"]})
    assert r.status_code == 400 and "Location" not in r.headers, r.text[-300:]
    assert "herald_session" not in r.headers.get("Set-Cookie", "")
    assert 'class="alert"' in r.text


def test_login_with_a_non_ascii_next_goes_there_encoded(site: Site) -> None:
    s = requests.Session()
    s.get(site.base + "/login", timeout=10)
    r = s.post(site.base + "/login", allow_redirects=False, timeout=30, data={
        "username": "ann", "password": PASSWORD, "next": "/messages?openid=你 好",
        "csrf_token": s.cookies["herald_login"]})
    assert r.status_code == 303
    assert r.headers["Location"] == "/messages?openid=%E4%BD%A0%20%E5%A5%BD"


def test_malformed_login_forms(site: Site) -> None:
    token = "t" * 32
    cookie = f"herald_login={token}"
    for body in (b"csrf_token=" + token.encode() + b"&username=a%00n&password=x",
                 b"csrf_token=" + token.encode() + b"&username=ann&username=vic&password=x",
                 b"csrf_token=" + token.encode() + b"&username=%FF&password=x",
                 b"csrf_token=" + token.encode() + b"&username=" + b"a" * 65 + b"&password=x",
                 b"csrf_token=" + token.encode() + b"&csrf_token=x&username=ann&password=x",
                 b"csrf_token=" + token.encode() + b"&username=ann&password=%ED%A0%80"):
        refused(site.post(b"/login", body, cookie=cookie))
    # a NUL in a password is just a wrong password
    got = site.post(b"/login", b"csrf_token=" + token.encode() + b"&username=vic&password=%00",
                    cookie=cookie)
    assert got.status == 401


# ------------------------------------------------------------------ actions


def action_body(site: Site, row: int, extra: bytes) -> bytes:
    return (b"csrf_token=" + site.csrf.encode() + b"&ids=%d&confirm=1&" % row + extra)


ACTION_REFUSED: list[bytes] = [
    b"back=//evil.example/", b"back=https://evil.example/", b"back=/%5Cevil.example",
    b"back=/a%0D%0ASet-Cookie:%20x=1", b"back=%00", b"back=/a%00", b"back=javascript:x",
    b"back=/" + b"a" * 3000, b"back=/a&back=/b",
    b"expected=x", b"expected=-1", b"expected=%00", b"expected=99999999999999999999",
    b"confirm=yes", b"confirm=1", b"errcode_null=2", b"errcode_null=%00",
    b"ids=1", b"template=%00", b"template=a%0Ab", b"openid=%00", b"app=%00",
    b"app=" + b"a" * 33, b"template=%FF", b"openid=%ED%A0%80", b"errcode=%00",
    b"errcode=99999999999", b"errcode=1.5", b"csrf_token=x",
]


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_malformed_action_forms_change_nothing(site: Site, action: str) -> None:
    row = site.seeded.failed[0] if action == "retry" else site.seeded.waiting[0]
    before = state_of(site.db)
    failures: list[tuple[object, ...]] = []
    for extra in ACTION_REFUSED:
        got = site.post(b"/actions/" + action.encode(), action_body(site, row, extra))
        if got.status != 400 or 'class="alert"' not in got.text or "Traceback" in got.text:
            failures.append((extra[:60], got.status, got.text[-300:]))
        if state_of(site.db) != before:
            failures.append((extra[:60], "changed the rows"))
            break
    for body, headers in (
            (b"csrf_token=%FF%FE", {}),
            (action_body(site, row, b"x=" + b"y" * 70000), {}),
            (action_body(site, row, b""), {b"Content-Length": b"abc"}),
            (action_body(site, row, b""), {b"Content-Type": b"multipart/form-data; b=x"})):
        got = raw_request(site.base, "POST", b"/actions/" + action.encode(), body=body,
                          cookie=site.cookie, content_type=None if headers.get(
                              b"Content-Type") else b"application/x-www-form-urlencoded",
                          headers=headers)
        if not 400 <= got.status < 500 or "Traceback" in got.text:
            failures.append((body[:40], headers, got.status, got.text[-300:]))
    assert not failures, failures
    assert state_of(site.db) == before
    print(f"\n{site.name} {action}: {len(ACTION_REFUSED) + 4} malformed forms refused")


def test_a_non_latin1_back_is_followed_encoded(site: Site) -> None:
    row = site.seeded.failed[0]
    back = quote("/messages?openid=你&status=fail", safe="").encode()  # a form value
    got = site.post(b"/actions/retry", action_body(site, row, b"back=" + back))
    assert got.status == 303, got.text[-400:]
    assert got.location == "/messages?openid=%E4%BD%A0&status=fail"
    state = state_of(site.db)[0]
    assert next(r for r in state if r[0] == row)[1] == "wait"
    # a dry run shows the same target, encoded, on its back link and hidden field
    dry = site.post(b"/actions/retry", b"csrf_token=" + site.csrf.encode() + b"&ids=%d&back="
                    % site.seeded.failed[1] + quote("/你", safe="/").encode())
    assert dry.status == 200 and 'href="/%E4%BD%A0"' in dry.text


# ------------------------------------------------------------------ the seams, one by one


def test_a_query_string_no_server_could_have_passed_is_refused() -> None:
    from web.console.inputs import BadInput, query_of

    with pytest.raises(BadInput):  # PEP 3333: a native string holds bytes as latin-1
        query_of({"QUERY_STRING": "openid=你"})
    assert query_of({"QUERY_STRING": "openid=\xe4\xbd\xa0"}) == {"openid": "你"}


@pytest.mark.parametrize("location", ["//evil.example/", "/你", "/a b", "/a\r\nX: y",
                                      "https://evil.example/", "/\\evil", "relative"])
def test_redirect_itself_refuses_a_location_that_is_no_encoded_path(location: str) -> None:
    from web.console.http import redirect

    with pytest.raises(ValueError):
        redirect(location)
    assert redirect("/messages?openid=%E4%BD%A0").headers[0][1] == "/messages?openid=%E4%BD%A0"
