"""The console in a real Chromium (Debian's package, driven by Playwright), against a
real `serve` and a real `run` daemon sending to the WeChat sandbox.

One scenario, in the order an operator meets it: a logged-out request lands on the
login page; the overview shows the seeded numbers; a message is found by openid and
its history opened; failed rows are re-driven (dry-run count, confirm) and the running
daemon delivers them; a viewer finds no button and a forged POST of theirs is refused;
a POST without the CSRF token is refused; logging out ends the session; repeated wrong
passwords lock the user out. Each page is screenshotted into $HERALD_SCREENSHOTS (.screenshots/
by default; `make screenshots` writes docs/console/, which the README shows); screenshots
of a failure go to the test's tmp dir.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.console_support import (
    APP_SECRET,
    MARKERS,
    PASSWORD,
    console_data,
    fresh_db,
    insert,
    seed,
)
from tests.support import APPID, ROOT, DaemonProcess, SandboxProcess, ServeProcess, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# a scratch folder by default (a test run must not rewrite tracked files); `make
# screenshots` points it at docs/console, where the README's pictures live
SHOTS = Path(os.environ.get("HERALD_SCREENSHOTS") or ROOT / ".screenshots")

sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)",
                allow_module_level=True)


@pytest.fixture
def herald(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Sandbox, `run` and `serve` on one SQLite queue with the seeded rows, and one
    row the daemon delivers before the browser starts (so it has a real history)."""
    url = f"sqlite:///{tmp_path / 'herald.db'}"
    db = fresh_db(url)
    seeded = seed(db)
    history = day_of_sends(db)
    alice = insert(db, template="order_status", openid="o_alice",
                   params='["Flat white", 28, "shipped", "enjoy"]', dedup_key="order-alice")
    sandbox = SandboxProcess(tmp_path, appid=APPID, secret=APP_SECRET)
    data = console_data(tmp_path, url, api_base=sandbox.url,
                        jobs={"dispatch": {"every": 0.5}, "stale_retry": {"every": 60}})
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True))
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log", "daemon").start()
    serve = ServeProcess(cfg, tmp_path / "serve.log", "serve").start()
    try:
        daemon.wait_ready()
        serve.wait_ready()

        def status(row_id: int) -> str:
            found = db.execute_sql("SELECT status FROM msg_list WHERE id = ?", (row_id,))
            return str(found.fetchone()[0])

        assert wait_for(lambda: status(alice) == "success", 30), daemon.tail()
        yield {"base": serve.urls()["console"], "seeded": seeded, "alice": alice,
               "history": history,
               "status": status, "sandbox": sandbox, "daemon": daemon, "serve": serve,
               "tmp": tmp_path, "db": db}
    finally:
        serve.stop()
        daemon.stop()
        sandbox.stop()
        serve.close()
        daemon.close()
        db.close()


def day_of_sends(db: Any) -> int:
    """A day of delivered vip_pay_success rows, busier by day (UTC+8) than by night, so
    the chart in the screenshots looks like a queue's day. Returns how many."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rng = random.Random(13)
    rows: list[tuple[object, ...]] = []
    # 30 minutes short of a day: a slow run still finds every row inside "the last 24 h"
    for minute in range(2, 24 * 60 - 30):
        at = now - timedelta(minutes=minute)
        local = at.astimezone(timezone(timedelta(hours=8))).hour + at.minute / 60
        level = 0.6 + 7 * max(0.0, math.sin(math.pi * (local - 7.5) / 15))
        for k in range(int(level * rng.uniform(0.3, 1.4))):
            stamp = (at + timedelta(seconds=k)).replace(tzinfo=None).isoformat(sep=" ")
            rows.append(("vip_pay_success", f"o_vip{len(rows) % 97}",
                         '["Gold", "199.00", "2026-11-28 10:30", "thanks"]', "success", 1,
                         stamp, stamp, stamp, stamp, "delivered", stamp))
    with db.atomic():
        db.cursor().executemany(
            "INSERT INTO msg_list (template, openid, params, status, attempts, send_at, "
            "created_at, updated_at, sent_at, receipt, receipt_at) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def log_in(page: Any, base: str, user: str, password: str = PASSWORD) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("form.stack button[type=submit]")


def no_markers(page: Any) -> None:
    html = page.content()
    assert not any(m in html for m in MARKERS), page.url


def test_console_in_a_browser(herald: dict[str, Any], browser: Any) -> None:
    base, seeded, status = herald["base"], herald["seeded"], herald["status"]
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    page = context.new_page()
    try:
        _operator(page, herald)
        _viewer(browser, herald)
        _forged_and_logout(page, context, herald)
        _rate_limit(browser, base)
        _phone(browser, base)
    except Exception:
        page.screenshot(path=str(herald["tmp"] / "failure.png"), full_page=True)
        raise
    finally:
        context.close()
    assert all(status(i) == "success" for i in seeded.failed)


def _operator(page: Any, herald: dict[str, Any]) -> None:
    base, seeded, status = herald["base"], herald["seeded"], herald["status"]
    # a logged-out request is sent to the login page, and comes back after it
    page.goto(base + "/messages")
    assert re.search(r"/login\?next=/messages$", page.url)
    shot(page, "login")
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.stack button[type=submit]")
    assert page.url == base + "/messages"

    # the overview shows the seeded numbers (3 + alice delivered, 3 failed, 2 waiting)
    page.goto(base + "/")
    counts = {s: page.text_content(f'[data-count="{s}"]') for s in (
        "success", "fail", "wait", "cancelled", "total", "delivered", "missing")}
    day = herald["history"]
    assert counts == {"success": f"{4 + day:,}", "fail": "3", "wait": "2", "cancelled": "2",
                      "total": f"{11 + day:,}", "delivered": f"{1 + day:,}", "missing": "1"}, \
        counts
    assert page.locator("svg.chart path.chart-area").count() == 1
    assert page.text_content('[data-errcode="47003"]') == "2"
    no_markers(page)
    shot(page, "overview")

    # find a message by openid, open its history (written by the running daemon)
    page.goto(base + "/messages")
    page.fill("input[name=openid]", "o_alice")
    page.click("form.filters button[type=submit]")
    rows = page.locator("table.rows tbody tr[data-id]")
    assert rows.count() == 1
    shot(page, "messages")
    rows.first.locator("td a").first.click()
    assert page.url == base + f"/messages/{herald['alice']}"
    assert page.locator("table.timeline tr[data-kind=attempt]").count() >= 1
    assert page.text_content('[data-col="status"]') == "success"
    assert '"touser": "o_alice"' in page.text_content("[data-rendered]")
    no_markers(page)
    shot(page, "message")

    # re-drive the failed rows: a dry run counts them, confirm, the daemon delivers
    page.goto(base + "/failures")
    shot(page, "failures")
    page.locator('tr[data-errcode="47003"] form button').click()
    assert page.text_content('[data-count="dry-run"]') == "2"
    assert all(status(i) == "fail" for i in seeded.failed)
    shot(page, "confirm")
    page.click("button[data-confirm]")
    assert page.url == base + "/failures"
    assert "re-drove 2 rows" in page.text_content(".flash")
    row = seeded.failed[0]
    assert wait_for(lambda: status(row) == "success", 30), herald["daemon"].tail()
    page.goto(base + f"/messages/{row}")
    assert page.text_content('[data-col="status"]') == "success"
    kinds = page.locator("table.timeline tr[data-kind]").evaluate_all(
        "rows => rows.map(r => r.dataset.kind)")
    assert kinds[0] == "retry" and "attempt" in kinds, kinds
    assert "re-driven by console:ann" in page.text_content("table.timeline")

    page.goto(base + "/templates?preview=order_status")
    assert page.locator('[data-preview="ok"]').count() == 1
    no_markers(page)
    shot(page, "templates")
    page.goto(base + "/grants?openid=o_user0")
    assert "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc" in page.text_content("table.grants")
    shot(page, "grants")
    page.goto(base + "/daemons")
    assert page.locator('tr[data-role="serve"]').count() == 1  # serve's own heartbeat
    no_markers(page)
    shot(page, "daemons")


def _viewer(browser: Any, herald: dict[str, Any]) -> None:
    base, seeded, status = herald["base"], herald["seeded"], herald["status"]
    target = seeded.hop_parent  # failed (43101) and never re-driven
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    log_in(page, base, "vic")
    page.goto(base + "/failures")
    assert page.locator('[data-errcode="43101"]').count() >= 1
    assert page.locator('form[action="/actions/retry"]').count() == 0
    page.goto(base + f"/messages/{target}")
    assert page.locator('form[action^="/actions/"]').count() == 0
    token = page.get_attribute('form.logout input[name="csrf_token"]', "value")
    r = context.request.post(base + "/actions/retry", form={
        "csrf_token": token, "ids": str(target), "confirm": "1"}, max_redirects=0)
    assert r.status == 403 and "operator" in r.text()
    assert status(target) == "fail"
    context.close()


def _forged_and_logout(page: Any, context: Any, herald: dict[str, Any]) -> None:
    base, seeded, status = herald["base"], herald["seeded"], herald["status"]
    target = seeded.hop_parent
    # the operator's own session, but no CSRF token: refused
    r = context.request.post(base + "/actions/retry", form={"ids": str(target),
                                                            "confirm": "1"}, max_redirects=0)
    assert r.status == 403 and "CSRF" in r.text()
    assert status(target) == "fail"
    page.goto(base + "/")
    page.click("form.logout button")
    assert page.url.startswith(base + "/login")
    page.goto(base + "/failures")
    assert re.search(r"/login\?next=/failures$", page.url)


def _rate_limit(browser: Any, base: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    for _ in range(5):
        log_in(page, base, "vic", "not the password")
        assert "wrong user name or password" in page.text_content(".alert")
    log_in(page, base, "vic")  # the right password, too late
    assert "too many failed logins for this user" in page.text_content(".alert")
    assert "/login" in page.url
    context.close()


def _phone(browser: Any, base: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844},
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    log_in(page, base, "ann")
    page.goto(base + "/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width  # nothing wider than the phone: tables scroll inside
    shot(page, "overview-phone")
    context.close()
