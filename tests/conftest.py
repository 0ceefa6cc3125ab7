"""Shared fixtures: a real database per test, the sandbox on loopback, a Runtime.

SQLite runs everywhere (a fresh file per test). PostgreSQL and MySQL/MariaDB run
when HERALD_TEST_POSTGRES_URL / HERALD_TEST_MYSQL_URL are set (.ci/run sets them);
otherwise their parametrisations skip with the reason.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config import Config, config_from_dict  # noqa: E402
from db.connection import init_schema  # noqa: E402
from db.models import AccessToken, MsgList  # noqa: E402
from logs import install_redaction  # noqa: E402
from runtime import Runtime  # noqa: E402
from sandbox.wechat import Sandbox  # noqa: E402
from templates import load_templates  # noqa: E402
from tests.bound import connect  # noqa: E402
from tests.support import APPID, SECRET, config_data, drop_herald_tables  # noqa: E402

# what the daemons and the CLI do at start (importing logs installs nothing): caplog
# then sees what journald would
install_redaction()

SERVER_URLS = {
    "postgres": os.environ.get("HERALD_TEST_POSTGRES_URL"),
    "mysql": os.environ.get("HERALD_TEST_MYSQL_URL"),
}


def database_url(dialect: str, tmp_path: Path) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'herald.db'}"
    url = SERVER_URLS[dialect]
    if not url:
        pytest.skip(f"{dialect}: set HERALD_TEST_{dialect.upper()}_URL to run (.ci/run does)")
    drop_herald_tables(url)  # each test starts empty
    return url


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each dialect (servers skip when not configured)."""
    return database_url(request.param, tmp_path)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return database_url("sqlite", tmp_path)


@pytest.fixture
def db(db_url: str):
    database = connect(db_url)
    init_schema(database)
    yield database
    database.close()


@pytest.fixture
def any_db(any_db_url: str):
    database = connect(any_db_url)
    init_schema(database)
    yield database
    database.close()


def template_keys(path: Path = ROOT / "templates.yaml") -> dict[str, list[str]]:
    tset = load_templates(path)
    # a template without a template_id (SMS, webhook) is nothing the WeChat sandbox checks
    return {t.template_id: list(t.data) for t in tset.templates.values()
            if t.template_id is not None}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(apps={APPID: SECRET}, templates=template_keys()) as sb:
        yield sb


def make_config(db_url: str, api_base: str, tmp_path: Path, **overrides: Any) -> Config:
    """A Config like a user's, pointing at the test database and the sandbox."""
    overrides = {"http": {"timeout": 2}, **overrides}  # short: failing tests end quickly
    data = config_data(folder=tmp_path, api_base=api_base, database=db_url, **overrides)
    return config_from_dict(data, base_dir=tmp_path, env={})


@pytest.fixture
def runtime_factory(tmp_path: Path):
    """Build a Runtime on a database and sandbox; closes them at the end."""
    made: list[Runtime] = []

    def build(database, sb: Sandbox, **overrides: Any) -> Runtime:
        url = overrides.pop("db_url", None) or _url_of(database, tmp_path)
        cfg = make_config(url, sb.url, tmp_path, **overrides)
        rt = Runtime.build(cfg, database)
        made.append(rt)
        return rt

    yield build
    for rt in made:
        rt.close()


def _url_of(database, tmp_path: Path) -> str:
    name = type(database).__name__.lower()
    if "sqlite" in name:
        return f"sqlite:///{database.database}"
    if "postgres" in name:
        return SERVER_URLS["postgres"] or ""
    return SERVER_URLS["mysql"] or ""


def insert_sql(database, **cols: Any) -> int:
    """Insert a row with plain SQL and only the given columns, as an application would."""
    names = ", ".join(cols)
    marks = ", ".join([database.param] * len(cols))
    sql = f"INSERT INTO msg_list ({names}) VALUES ({marks})"
    if "postgres" in type(database).__name__.lower():
        return database.execute_sql(sql + " RETURNING id", list(cols.values())).fetchone()[0]
    return database.execute_sql(sql, list(cols.values())).lastrowid


def row(row_id: int) -> MsgList:
    return MsgList.get_by_id(row_id)


__all__ = ["APPID", "SECRET", "AccessToken", "MsgList", "insert_sql", "make_config", "row"]
