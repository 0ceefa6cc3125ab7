"""No configured secret and no console password hash ever leaves the console: not in a
page, an error page, a header (a redirect's Location, a cookie) or a log line, whole or
cut short, raw, HTML-escaped or percent-encoded; even when a request carries one (a
secret pasted into a search box, a `next=` or `back=` holding one) or a row holds one.

Every kind of secret the config can hold is configured with a marker value: app secret,
push Token and AES key, SMS SecretId, SecretKey and callback token, a webhook template's
secret, the database password, and the console users' scrypt hashes.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import pytest
import requests

from tests.channel_support import HOOK_SECRET, templates_text
from tests.conftest import database_url
from tests.console_support import (
    APP_SECRET,
    PASSWORD,
    PUSH_TOKEN,
    USERS,
    Answer,
    console,
    csrf_of,
    fresh_db,
    insert,
    login,
    raw_request,
    seed,
)
from web.console.auth import parse_hash

SMS_SECRET_ID = "AKIDMARKERSECRETID7f3a9c"
SMS_SECRET_KEY = "MARKER-SMS-SECRET-KEY-7f3a9c"
CALLBACK_TOKEN = "MARKER_CALLBACK_TOKEN_7f3a9c"
HOOK = "MARKER-HOOK-SECRET-7f3a9c0123"
DB_PASSWORD = "MARKERDBPASSWORD7f3a9c"
AES_KEY = "MARKER+AES/KEY+7f3a9c/".ljust(43, "B")  # + and / encode differently each way
HASHES = [u["password_hash"] for u in USERS.values()]
DIGESTS = [h.rsplit("$", 1)[1] for h in HASHES]
SECRETS = [APP_SECRET, PUSH_TOKEN, AES_KEY, SMS_SECRET_ID, SMS_SECRET_KEY, CALLBACK_TOKEN,
           HOOK, DB_PASSWORD, *HASHES, *DIGESTS]
WINDOW = 16  # a run of this many characters of a secret counts as showing it


def forms_of(secret: str) -> list[str]:
    """How a secret could be written on the way out."""
    return sorted({secret, html.escape(secret), quote(secret, safe=""), quote(secret),
                   quote_plus(secret), quote(quote(secret, safe=""), safe=""),
                   quote(quote(secret)), html.escape(quote_plus(secret))})


def leaked(text: str) -> list[str]:
    """Every secret shown in `text`, whole or any WINDOW characters of it, in any form."""
    found = []
    for secret in SECRETS:
        for form in forms_of(secret):
            size = min(WINDOW, len(form))
            if any(form[i:i + size] in text for i in range(len(form) - size + 1)):
                found.append(secret)
                break
    return found


def exposed(answer: Answer | requests.Response) -> list[str]:
    if isinstance(answer, Answer):
        text, headers = answer.text, answer.headers
    else:
        text, headers = answer.text, dict(answer.headers)
    location = next((v for k, v in headers.items() if k.lower() == "location"), "")
    return leaked("\n".join([text, *(f"{k}: {v}" for k, v in headers.items()),
                             unquote(location), unquote(unquote(location))]))


@dataclass
class World:
    base: str
    db: Any
    failed: int


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    seeded = seed(db)
    now = datetime.now(UTC).replace(microsecond=0)
    # rows that hold secrets (an application's mistake, a remote's echo): the pages cut
    # long values short, and a cut secret is a secret all the same
    for secret in SECRETS:
        insert(db, template="order_status", openid=secret, params=json.dumps([secret] * 4),
               status="fail", errcode=40001, error=f"remote said: invalid {secret} x" * 3,
               dedup_key=secret[:191], updated_at=now)
    db.execute_sql("INSERT INTO herald_daemon (daemon_id, role, host, pid, version, started_at,"
                   " last_seen, info) VALUES ('h:2:run', 'run', 'h', 2, '1', ?, ?, ?)",
                   (now.strftime("%Y-%m-%d %H:%M:%S"), now.strftime("%Y-%m-%d %H:%M:%S"),
                    json.dumps({"alerts": [f"sms: {SMS_SECRET_KEY} refused" * 20],
                                "note": AES_KEY * 3})))
    templates = tmp_path / "channels.yaml"
    templates.write_text(templates_text().replace(HOOK_SECRET, HOOK), encoding="utf-8")
    sms = {"secret_id": SMS_SECRET_ID, "secret_key": SMS_SECRET_KEY,
           "sdk_app_id": "1400006666", "sign_name": "测试", "endpoint": "http://127.0.0.1:9",
           "callback_token": CALLBACK_TOKEN}
    apps = {"default": {"appid": "wxtest0000000001", "secret": APP_SECRET,
                        "push": {"token": PUSH_TOKEN, "aes_key": AES_KEY}},
            "shop_oa": {"appid": "wxofficial00000001", "secret": "MARKER-OA-SECRET-7f3a9c",
                        "kind": "official_account"}}
    with console(db, tmp_path, url, apps=apps, sms=sms, templates=str(templates),
                 database=f"postgresql://herald:{DB_PASSWORD}@127.0.0.1:1/herald",
                 ) as base:
        yield World(base, db, seeded.failed[0])
    db.close()


def test_the_world_holds_every_kind_of_secret(world: World) -> None:
    for h in HASHES:
        parse_hash(h)
    text = login(world.base).get(world.base + "/templates", timeout=10).text
    assert "order_hook" in text  # the webhook template (with its secret) is loaded


PAGES = ["/", "/messages", "/messages?status=fail", "/failures", "/templates", "/daemons",
         "/templates?preview=order_hook", "/templates?preview=order_status", "/grants"]


def carrying(secret: str) -> list[str]:
    """GETs whose query or path holds `secret`, as someone pasting it would send it."""
    q = quote(secret, safe="")
    return [f"/messages?openid={q}", f"/messages?q={q}", f"/messages?template={q}",
            f"/messages?app={q}", f"/messages?before={q}", f"/messages/{q}",
            f"/messages?status={q}", f"/grants?openid={q}", f"/templates?preview={q}",
            f"/templates?preview=order_status&openid={q}",
            "/templates?preview=order_status&params=" + quote(json.dumps([secret] * 4)),
            f"/login?next=/messages%3Fopenid%3D{q}", f"/login?next={q}", f"/nope/{q}",
            f"/messages?openid={q}&openid=x"]


def test_no_page_header_or_log_line_shows_a_secret(world: World,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    base = world.base
    found: dict[str, list[str]] = {}

    def look(what: str, answer: Answer | requests.Response) -> None:
        if shown := exposed(answer):
            found[what] = shown

    operator, viewer = login(base), login(base, "vic")
    ids = [int(r[0]) for r in world.db.execute_sql("SELECT id FROM msg_list").fetchall()]
    for s in (operator, viewer):
        for path in PAGES + [f"/messages/{i}" for i in ids] + [
                "/messages?openid=" + quote(x, safe="") for x in SECRETS]:
            look(path, s.get(base + path, timeout=30))
    for secret in SECRETS:
        for path in carrying(secret):
            look(path, operator.get(base + path, timeout=30, allow_redirects=False))
            look("guest " + path, raw_request(base, "GET", path.encode("ascii")))
    token = csrf_of(operator.get(base + "/", timeout=10).text)
    for secret in SECRETS:
        for action in ("retry", "cancel"):
            for field in ("template", "openid", "app", "ids", "errcode", "back", "expected"):
                data = {"csrf_token": token, "template": "order_status", field: secret}
                look(f"{action} {field}", operator.post(base + f"/actions/{action}", data=data,
                                                        timeout=30, allow_redirects=False))
        # a confirmed action sent back to an address that holds the secret
        back = "/messages?openid=" + quote(secret, safe="")
        look("back", operator.post(base + "/actions/retry", timeout=30, allow_redirects=False,
                                   data={"csrf_token": token, "ids": str(world.failed),
                                         "confirm": "1", "back": back}))
        # logins: the secret as user name, password and next
        for fields in ({"username": secret[:64], "password": "x"},
                       {"username": "nobody", "password": secret},
                       {"username": "ann", "password": PASSWORD, "next": "/x?" + secret},
                       {"username": "vic", "password": "wrong", "next": "/x?" + secret}):
            s = requests.Session()
            look("login form", s.get(base + "/login?next=/x%3F" + quote(secret, safe=""),
                                     timeout=10))
            look(f"login {sorted(fields)}", s.post(base + "/login", timeout=30,
                                                   allow_redirects=False, data={
                                                       "csrf_token": s.cookies["herald_login"],
                                                       **fields}))
    # the console's and the web server's own lines (the test's HTTP client logs the URLs
    # it requests, secrets and all: that is this test, not Herald)
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records
                       if r.name.startswith(("herald", "waitress")))
    assert logged, "no log lines were captured"
    if shown := leaked(logged):
        found["log"] = shown
    for what, shown in found.items():
        print("LEAK", what, [s[:12] for s in shown])
    assert not found, sorted(found)


def test_the_scrub_masks_what_slips_through(world: World) -> None:
    """The last line of defence on its own: a page that would hold a secret, whole or
    cut, gets it masked (here: a template's own source, which names no secret on
    purpose, is not the test; the scrub function is)."""
    from web.console.scrub import Scrubber

    scrub = Scrubber([APP_SECRET, AES_KEY, HASHES[0]])
    for secret in (APP_SECRET, AES_KEY, HASHES[0]):
        for body in (f"x {secret} y", f"x {secret[:20]}… y", f"'{secret[:30]}...'",
                     f"x {html.escape(secret)}", f"/m?o={quote(secret, safe='')}"):
            out = scrub(body.encode("utf-8")).decode("utf-8")
            assert not leaked(out), (body, out)
            assert "&lt;secret&gt;" in out
    assert scrub(b"MARKER and AAAA and scrypt$") == b"MARKER and AAAA and scrypt$"


def test_a_password_typed_as_the_user_name_is_not_logged(world: World,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    caplog.set_level(logging.INFO)
    s = requests.Session()
    s.get(world.base + "/login", timeout=10)
    for _ in range(7):  # failed, then rate limited: both are logged
        s.post(world.base + "/login", timeout=30, data={
            "username": PASSWORD, "password": "ann", "csrf_token": s.cookies["herald_login"]})
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("herald")]
    assert any("unknown user name (21 characters)" in line for line in lines), lines
    assert not any(PASSWORD in line for line in lines)


def test_the_consoles_log_lines_are_scrubbed_of_cut_and_nested_secrets(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    """logs.redact masks each registered secret whole, one by one; the console's own
    records also lose a secret cut short, and a hash whose digest is a secret too."""
    caplog.set_level(logging.INFO)
    log = logging.getLogger("herald.console")
    log.warning("console: a note holding %s… and %s", AES_KEY[:20], HASHES[0])
    log.warning("console: %s", DIGESTS[1] + " then " + HASHES[1][:30])
    lines = [r.getMessage() for r in caplog.records if r.name == "herald.console"]
    assert len(lines) == 2 and "<redacted>" in lines[0]
    assert not leaked("\n".join(lines)), lines
