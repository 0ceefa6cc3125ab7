"""db/errors.py: a failure to reach the database as one sentence, its cause kept."""

from __future__ import annotations

import pytest

from db.errors import cause, describe
from tests.bound import connect
from tests.conftest import SERVER_URLS


def fail(url: str) -> Exception:
    db = connect(url)
    with pytest.raises(Exception) as info:  # noqa: PT011 - whatever the driver raises
        db.connect()
    return info.value


def test_postgres_refused_unknown_host_and_password_masked():
    exc = fail("postgresql://herald:pw@127.0.0.1:9/herald")
    assert describe(exc, "postgresql://herald:pw@127.0.0.1:9/herald") == (
        "database postgresql://herald:***@127.0.0.1:9/herald: connection refused: is the "
        "server running on that host and port?")
    exc = fail("postgresql://h@no-such-host.invalid/x")
    assert cause(exc).startswith('unknown host "no-such-host.invalid"')


def test_mysql_codes_get_their_meaning():
    exc = fail("mysql://root@127.0.0.1:9/x")
    assert cause(exc).startswith("cannot connect: is the server running on that host and "
                                 "port? (2003: ")
    assert "Connection refused" in cause(exc)


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_a_missing_database_is_named(dialect):
    url = SERVER_URLS[dialect]
    if not url:
        pytest.skip(f"{dialect}: set HERALD_TEST_{dialect.upper()}_URL to run")
    missing = url.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1] + "_missing"
    text = describe(fail(missing), missing)
    assert text.startswith(f"database {missing}: ")
    assert "does not exist" in text
    assert "\n" not in text
