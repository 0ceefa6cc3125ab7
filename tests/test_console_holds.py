"""The console shows the quota holds in force, on the overview and the daemons page."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from pathlib import Path

from db import holds
from tests.conftest import database_url
from tests.console_support import console, fresh_db, login, seed


def test_holds_on_the_overview_and_the_daemons_page(tmp_path: Path) -> None:
    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    seed(db)
    now = datetime.now(UTC)
    holds.publish(db, [holds.New("default", "subscribe", now + timedelta(hours=3),
                                 "deferred to the next quota day: 45009 <b>quota</b>")],
                  who="host:7:run", now=now)
    with console(db, tmp_path, url) as base:
        s = login(base)
        overview = s.get(base + "/", timeout=10).text
        daemons = s.get(base + "/daemons", timeout=10).text
        for page in (overview, daemons):
            assert 'data-hold="default/subscribe"' in page
            assert "host:7:run" in page and "<b>quota</b>" not in page  # escaped
            assert "45009 <b>quota</b>" in html.unescape(page)
        holds.lift(db, "default", None, who="cli:op", now=datetime.now(UTC))
        after = s.get(base + "/daemons", timeout=10).text
        assert "data-hold=" not in after and "no quota hold in force" in after
    db.close()


def test_no_holds_section_on_the_overview_when_none(tmp_path: Path) -> None:
    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    seed(db)
    with console(db, tmp_path, url) as base:
        overview = login(base).get(base + "/", timeout=10).text
        assert "Quota holds" not in overview and 'data-count="total"' in overview
    db.close()
