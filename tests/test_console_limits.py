"""Login limits hold under concurrency: 64 wrong logins at once, over real HTTP to the
console on a real waitress listener, check at most the limit's number of passwords.

Before the limiter was one atomic step, every request that had passed `blocked()` but
not yet reached `failed()` was a free guess: 64 concurrent logins for one user got 11-12
password checks against a limit of 5. A check in flight now counts.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import database_url
from tests.console_support import PASSWORD, console, fresh_db, login
from web.console import auth

CONCURRENT = 64
PER_USER, PER_ADDRESS = 5, 20  # LoginLimiter's defaults, which the console uses


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password check the console makes, as the user name it was for (a check
    is one scrypt, the thing the limit rations)."""
    checks: list[str] = []
    lock = threading.Lock()
    real = auth.authenticate

    def authenticate(table, user, password):  # type: ignore[no-untyped-def]
        with lock:
            checks.append(user)
        return real(table, user, password)

    monkeypatch.setattr(auth, "authenticate", authenticate)
    return checks


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    url = database_url("sqlite", tmp_path)
    db = fresh_db(url)
    with console(db, tmp_path, url) as where:
        yield where
    db.close()


def all_at_once(n: int, attempt: Callable[[int], int]) -> list[int]:
    """Run attempt(i) for i in range(n) on n threads released together; their statuses."""
    gate = threading.Barrier(n)
    out: list[int] = [0] * n

    def one(i: int) -> None:
        gate.wait(30)
        out[i] = attempt(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return out


def wrong_login(base: str, username: str) -> int:
    token = "t" * 32  # the login form's CSRF token is a double-submit cookie
    r = requests.post(base + "/login", timeout=60, allow_redirects=False,
                      cookies={"herald_login": token},
                      data={"username": username, "password": "not the password",
                            "csrf_token": token})
    return r.status_code


def test_concurrent_wrong_logins_for_one_user_check_at_most_the_limit(
        base: str, counted: list[str]) -> None:
    statuses = all_at_once(CONCURRENT, lambda _: wrong_login(base, "ann"))
    print(f"\n{CONCURRENT} concurrent wrong logins for one user: {len(counted)} password "
          f"checks (limit {PER_USER})")
    assert sorted(set(statuses)) == [401, 429], statuses
    assert len(counted) <= PER_USER
    assert statuses.count(401) == len(counted)  # each check answered, each other refused
    # the user is locked now even with the right password (no check is made)
    s = requests.Session()
    s.get(base + "/login", timeout=10)
    r = s.post(base + "/login", timeout=30, allow_redirects=False, data={
        "username": "ann", "password": PASSWORD, "csrf_token": s.cookies["herald_login"]})
    assert r.status_code == 429 and len(counted) <= PER_USER


def test_concurrent_wrong_logins_from_one_address_check_at_most_its_limit(
        base: str, counted: list[str]) -> None:
    # a different user name each: only the per-address limit applies
    statuses = all_at_once(CONCURRENT, lambda i: wrong_login(base, f"user{i}"))
    print(f"\n{CONCURRENT} concurrent wrong logins from one address: {len(counted)} "
          f"password checks (limit {PER_ADDRESS})")
    assert len(counted) <= PER_ADDRESS
    assert statuses.count(401) == len(counted) and statuses.count(429) == CONCURRENT - len(
        counted)
    # another user from the same address is refused too, before any check
    assert wrong_login(base, "vic") == 429 and len(counted) <= PER_ADDRESS


def test_a_success_in_flight_does_not_use_up_the_users_tries(base: str,
                                                             counted: list[str]) -> None:
    # the right password, as many times at once as the limit allows: each succeeds,
    # and none is left counted as a failure, for the user or for the address
    for _ in range(PER_ADDRESS):
        statuses = all_at_once(PER_USER, lambda _: login(base).get(base + "/",
                                                                  timeout=30).status_code)
        assert statuses == [200] * PER_USER
    for _ in range(PER_USER):
        assert wrong_login(base, "ann") == 401
    assert wrong_login(base, "ann") == 429


# ------------------------------------------------------------------ the limiter itself


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_limiter_counts_a_check_in_flight() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(per_user=5, per_address=20, window=900, clock=clock)
    held = [a for a in (limiter.attempt("ann", "10.0.0.1") for _ in range(5))
            if isinstance(a, auth.Attempt)]
    assert len(held) == 5
    refused = limiter.attempt("ann", "10.0.0.2")  # five are in flight: no sixth
    assert isinstance(refused, str) and "this user" in refused
    for a in held:
        limiter.failed(a)
    assert isinstance(limiter.attempt("ann", "10.0.0.3"), str)
    clock.t += 901
    assert isinstance(limiter.attempt("ann", "10.0.0.3"), auth.Attempt)


def test_limiter_a_success_gives_its_tries_back() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(per_user=5, per_address=20, window=900, clock=clock)
    for _ in range(4):
        attempt = limiter.attempt("ann", "10.0.0.1")
        assert isinstance(attempt, auth.Attempt)
        limiter.failed(attempt)
    ok = limiter.attempt("ann", "10.0.0.1")
    assert isinstance(ok, auth.Attempt)
    limiter.succeeded(ok)  # the user's failures are forgiven, the address keeps its four
    for _ in range(5):
        attempt = limiter.attempt("ann", "10.0.0.1")
        assert isinstance(attempt, auth.Attempt)
        limiter.failed(attempt)
    assert isinstance(limiter.attempt("ann", "10.0.0.1"), str)
    for i in range(11):  # 4 + 5 + 11 = 20 failures from the address
        attempt = limiter.attempt(f"u{i}", "10.0.0.1")
        assert isinstance(attempt, auth.Attempt)
        limiter.failed(attempt)
    why = limiter.attempt("carol", "10.0.0.1")
    assert isinstance(why, str) and "your address" in why
    assert isinstance(limiter.attempt("carol", "10.0.0.9"), auth.Attempt)


def test_limiter_threads_hammering_one_user() -> None:
    """Many rounds of threads at one limiter, with the interpreter switching threads as
    often as it can: a check and count that were not one step would let a sixth in."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(100):
            limiter = auth.LoginLimiter(per_user=5, per_address=1000, window=900)
            gate = threading.Barrier(16)
            got: list[object] = []

            def one(limiter: auth.LoginLimiter = limiter, gate: threading.Barrier = gate,
                    got: list[object] = got) -> None:
                gate.wait(10)
                for _ in range(3):
                    got.append(limiter.attempt("ann", "10.0.0.1"))

            threads = [threading.Thread(target=one) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert sum(isinstance(a, auth.Attempt) for a in got) == 5
    finally:
        sys.setswitchinterval(old)
