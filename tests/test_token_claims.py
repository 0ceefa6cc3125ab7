"""The token refresh holds no database lock while WeChat answers: it claims the right to
refresh in one short statement, fetches with no transaction open, and writes the token
in another. The others wait for that one refresh and read what it wrote; a refresher
that dies is taken over once its claim runs out. On all three engines."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

import clock
from channels.wechat_api import WeChatClient
from db.connection import dialect_of
from db.models import AccessToken
from db.schema import VERSION, init_schema, split_statements, state
from tests.bound import connect
from tests.conftest import APPID, ROOT, SECRET
from tests.io_guard import LockProbe, NetworkWatch, open_transaction
from tokens import TokenManager, TokenUnavailable

V2 = ROOT / "tests" / "fixtures" / "schema_v2"


class ProbingClient(WeChatClient):
    """The real client; just before each token call, whether a writer gets through."""

    def __init__(self, url: str, db_url: str, db) -> None:
        super().__init__(url, timeout=5)
        self.probe = LockProbe(db_url)
        self.db = db
        self.seen: list[tuple[bool, str | None]] = []

    def stable_token(self, appid: str, secret: str):
        self.seen.append((open_transaction(self.db), self.probe.check(0.3)))
        return super().stable_token(appid, secret)


def manager(db, client, daemon_id: str, **kw) -> TokenManager:
    from config import AppConfig, Secret

    app = AppConfig("default", APPID, Secret(SECRET), "stable", None, "miniprogram", None)
    return TokenManager(db, client, {"default": app}, daemon_id=daemon_id, **kw)


def test_no_transaction_and_no_lock_while_the_token_endpoint_answers(any_db_url, sandbox):
    db = connect(any_db_url)
    init_schema(db)
    client = ProbingClient(sandbox.url, any_db_url, db)
    tokens = manager(db, client, "a")
    with db.connection_context():
        token = tokens.get("default", clock.now())
    assert token and tokens.fetches == 1
    # the old refresh ran the call inside atomic(): BEGIN IMMEDIATE on SQLite, a row
    # lock (FOR UPDATE) on PostgreSQL and MySQL
    assert client.seen == [(False, None)]
    client.close()
    db.close()


def test_a_slow_token_call_leaves_the_database_writable(any_db_url, sandbox):
    """The same, watched from outside while the call is in flight (WeChat 1.5 s slow)."""
    db = connect(any_db_url)
    init_schema(db)
    sandbox.token_latency = 1.5
    client = WeChatClient(sandbox.url, timeout=5)
    tokens = manager(db, client, "a")
    watch = NetworkWatch(db, any_db_url, probe_during=True, probe_wait=0.5)
    with watch.watching(), db.connection_context():
        tokens.get("default", clock.now())
    assert watch.calls == 1 and watch.probes == 1
    assert not watch.violations, watch.report()
    client.close()
    db.close()


def test_two_daemons_wait_for_one_refresh(any_db_url, sandbox):
    """Two daemons (own connections, own ids) need a token at once: one fetch, both
    have it, the second waited for the first rather than fetching."""
    db = connect(any_db_url)
    init_schema(db)
    sandbox.token_latency = 1.0
    clients = [WeChatClient(sandbox.url, timeout=5) for _ in range(2)]
    managers = [manager(db, c, f"daemon-{i}") for i, c in enumerate(clients)]
    got: dict[int, str] = {}
    start = threading.Barrier(2)

    def need(i: int) -> None:
        start.wait()
        with db.connection_context():
            got[i] = managers[i].get("default", clock.now())

    threads = [threading.Thread(target=need, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got[0] == got[1]
    assert sandbox.token_calls["stable"] == 1
    assert sum(m.fetches for m in managers) == 1 and sum(m.waits for m in managers) == 1
    with db.connection_context():
        stored = AccessToken.get_by_id("default")
    assert stored.token == got[0] and stored.claimed_by is None and stored.claim_until is None
    for c in clients:
        c.close()
    db.close()


def test_a_dead_refresher_is_taken_over_when_its_claim_runs_out(any_db_url, sandbox):
    db = connect(any_db_url)
    init_schema(db)
    now = clock.now()
    with db.connection_context():
        # a daemon claimed the refresh 1.5 s before its claim ends, then died
        AccessToken.insert(app="default", claimed_by="dead:1:abc",
                           claim_until=now + timedelta(seconds=1.5)).execute()
    client = WeChatClient(sandbox.url, timeout=5)
    tokens = manager(db, client, "alive")
    # a bound on the wait: if the claim never ran out, stop instead of hanging the test
    timer = threading.Timer(15, tokens.stopping.set)
    timer.start()
    t0 = time.monotonic()
    try:
        with db.connection_context():
            token = tokens.get("default", now)
    finally:
        timer.cancel()
    waited = time.monotonic() - t0
    assert token and tokens.fetches == 1 and sandbox.token_calls["stable"] == 1
    assert 1.3 <= waited < 10, waited  # it waited for the claim, and not much longer
    with db.connection_context():
        row = AccessToken.get_by_id("default")
    assert (row.token, row.refreshed_by, row.claimed_by) == (token, "alive", None)
    client.close()
    db.close()


def test_a_live_claim_is_not_taken_while_its_owner_works(any_db_url, sandbox):
    """A claim that has not run out is respected: no second fetch, the waiter gets the
    token its owner writes."""
    db = connect(any_db_url)
    init_schema(db)
    now = clock.now()
    with db.connection_context():
        AccessToken.insert(app="default", claimed_by="other", claim_until=now + timedelta(
            seconds=60)).execute()
    client = WeChatClient(sandbox.url, timeout=5)
    tokens = manager(db, client, "waiter")

    def owner_writes() -> None:
        time.sleep(0.5)
        with db.connection_context():
            AccessToken.update({AccessToken.token: "token-written-by-the-owner-0001",
                                AccessToken.expires_at: now + timedelta(hours=2),
                                AccessToken.claimed_by: None,
                                AccessToken.claim_until: None}).execute()

    writer = threading.Thread(target=owner_writes)
    writer.start()
    with db.connection_context():
        assert tokens.get("default", now) == "token-written-by-the-owner-0001"
    writer.join()
    assert tokens.fetches == 0 and sandbox.token_calls["stable"] == 0 and tokens.waits == 1
    client.close()
    db.close()


def test_a_refresh_ahead_of_expiry_does_not_hold_up_senders(db, sandbox):
    """Another daemon renews a token that is still good: a sender uses the stored one
    at once rather than waiting for the renewal."""
    now = clock.now()
    AccessToken.insert(app="default", token="still-good-token-0001",
                       expires_at=now + timedelta(minutes=8), claimed_by="other",
                       claim_until=now + timedelta(seconds=60)).execute()
    client = WeChatClient(sandbox.url, timeout=5)
    tokens = manager(db, client, "sender")
    t0 = time.monotonic()
    assert tokens.get("default", now) == "still-good-token-0001"
    assert time.monotonic() - t0 < 0.5 and tokens.waits == 0
    # the refresh job of this daemon does not fetch either: the other one is on it
    assert tokens.refresh("default", now) == "still-good-token-0001"
    assert sandbox.token_calls["stable"] == 0
    client.close()


def test_a_failed_fetch_gives_its_claim_back(any_db_url, sandbox):
    db = connect(any_db_url)
    init_schema(db)
    sandbox.token_answer({"errcode": -1, "errmsg": "system busy"})
    client = WeChatClient(sandbox.url, timeout=5)
    tokens = manager(db, client, "a")
    with db.connection_context():
        with pytest.raises(TokenUnavailable, match="-1"):
            tokens.get("default", clock.now())
        row = AccessToken.get_by_id("default")
        assert (row.token, row.claimed_by, row.claim_until) == (None, None, None)
        # a second daemon is not made to wait for a claim nobody holds
        other = manager(db, client, "b")
        t0 = time.monotonic()
        assert other.get("default", clock.now())
        assert time.monotonic() - t0 < 2 and other.waits == 0
    client.close()
    db.close()


def test_a_waiter_stops_waiting_on_stop(db, sandbox):
    now = clock.now()
    AccessToken.insert(app="default", claimed_by="other",
                       claim_until=now + timedelta(seconds=20)).execute()
    client = WeChatClient(sandbox.url, timeout=5)
    tokens = manager(db, client, "a")
    threading.Timer(0.3, tokens.stopping.set).start()
    t0 = time.monotonic()
    with pytest.raises(TokenUnavailable, match="stopping"):
        tokens.get("default", now)
    assert time.monotonic() - t0 < 2
    client.close()


def test_a_version_2_database_gets_the_claim_columns(any_db_url, sandbox, runtime_factory):
    db = connect(any_db_url)
    with db.connection_context():
        for stmt in split_statements((V2 / f"{dialect_of(db)}.sql").read_text()):
            db.execute_sql(stmt)
        db.execute_sql("INSERT INTO herald_schema (version, description) VALUES (1, 'v1')")
        db.execute_sql("INSERT INTO herald_schema (version, description) VALUES (2, 'v2')")
        db.execute_sql(f"INSERT INTO access_token (app, token) VALUES ('default', "
                       f"{db.param})", ("kept-token-from-v2-0001",))
    assert state(db).version == 2
    assert init_schema(db) == list(range(3, VERSION + 1))
    with db.connection_context():
        columns = {c.name for c in db.get_columns("access_token")}
        assert {"claimed_by", "claim_until"} <= columns
        row = AccessToken.get_by_id("default")
        assert row.token == "kept-token-from-v2-0001" and row.claimed_by is None
        rt = runtime_factory(db, sandbox)
        assert rt.tokens.get("default", clock.now())  # no expiry stored: fetched anew
        assert rt.tokens.fetches == 1
    db.close()


class BlockingClient(WeChatClient):
    """A token endpoint that answers `token` once `go` is set (no HTTP at all)."""

    def __init__(self, token: str) -> None:
        super().__init__("http://127.0.0.1:9", timeout=1)
        self.token = token
        self.go = threading.Event()
        self.called = threading.Event()

    def stable_token(self, appid: str, secret: str):
        from channels.base import Answer, Kind

        self.called.set()
        self.go.wait(10)
        return Answer(Kind.SUCCESS, 0, "ok", payload={"access_token": self.token,
                                                       "expires_in": 7200.0})


def test_a_refresher_that_outlived_its_claim_does_not_overwrite_the_new_one(db):
    """A's call outlasts its claim; B takes over and stores its token; A's late answer
    is not written over B's (for legacy tokens B's is the valid one), and A uses B's."""
    slow, fast = BlockingClient("token-of-the-slow-one-0001"), BlockingClient(
        "token-of-the-taker-0002")
    fast.go.set()
    a = manager(db, slow, "a", claim_for=0.3)
    b = manager(db, fast, "b")
    got: dict[str, str] = {}
    now = clock.now()

    def run_a() -> None:
        with db.connection_context():
            got["a"] = a.get("default", now)

    t = threading.Thread(target=run_a)
    t.start()
    assert slow.called.wait(5)
    time.sleep(0.4)  # A's claim runs out while WeChat keeps it waiting
    assert b.get("default", now + timedelta(seconds=0.4)) == "token-of-the-taker-0002"
    slow.go.set()
    t.join(10)
    row = AccessToken.get_by_id("default")
    assert row.token == "token-of-the-taker-0002" and row.refreshed_by == "b"
    assert got["a"] == "token-of-the-taker-0002"
    assert a.fetches == 1 and b.fetches == 1


def test_one_claim_wins_however_close_the_race(any_db_url, sandbox):
    """The claim is one conditional UPDATE: two daemons that both read 'nobody is
    refreshing' cannot both win; once the claim runs out, another can."""
    db = connect(any_db_url)
    init_schema(db)
    client = WeChatClient(sandbox.url, timeout=5)
    a, b = manager(db, client, "a"), manager(db, client, "b")
    now = clock.now()
    need = now + timedelta(minutes=10)
    with db.connection_context():
        AccessToken.insert(app="default").execute()
        assert a._claim("default", now, need) is True
        assert b._claim("default", now, need) is False
        # its own claim, renewed (later: MySQL counts changed rows, not matched ones)
        assert a._claim("default", now + timedelta(seconds=1), need) is True
        later = now + a.claim_for + timedelta(seconds=1)
        assert b._claim("default", later, need) is True
        assert AccessToken.get_by_id("default").claimed_by == "b"
        # a token good beyond what is needed is never claimed for
        AccessToken.update({AccessToken.token: "good-token-0001", AccessToken.claimed_by: None,
                            AccessToken.expires_at: now + timedelta(hours=2)}).execute()
        assert a._claim("default", now, need) is False
    client.close()
    db.close()


def test_threads_of_one_daemon_wait_for_one_refresh(db, sandbox):
    """Sixteen send threads needing the token at once: one fetch; the others queue on the
    app's lock (no transaction held) and take the token it wrote."""
    sandbox.token_latency = 0.5
    client = WeChatClient(sandbox.url, timeout=5)
    tokens = manager(db, client, "one")
    got: list[str] = []
    start = threading.Barrier(16)

    def need() -> None:
        start.wait()
        with db.connection_context():
            got.append(tokens.get("default", clock.now()))

    threads = [threading.Thread(target=need) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 16 and len(set(got)) == 1
    assert tokens.fetches == 1 and sandbox.token_calls["stable"] == 1
    client.close()
