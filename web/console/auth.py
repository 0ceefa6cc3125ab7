"""Who may use the console: password hashes, sessions, CSRF tokens, login rate limits.

- Passwords: scrypt (hashlib, no extra dependency), stored as
  scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>; `herald console-password` prints one.
  Verifying always costs one scrypt, for unknown users too (a dummy hash), and compares
  in constant time, so neither timing nor answers tell which user names exist.
- Sessions live in this process's memory (serve is one process): a random id in an
  HttpOnly, SameSite=Strict cookie (Secure when console.cookie_secure), looked up by its
  SHA-256 so the store never holds a usable id; each ends session_ttl after login. A
  restart logs everyone out, which is the safe direction.
- Every POST carries the session's CSRF token (the login form a double-submit cookie's),
  checked with hmac.compare_digest.
- Failed logins are counted per user name and per remote address in a sliding window;
  past the limit the login is refused before the password is even checked, and a
  check in flight counts (LoginLimiter.attempt), so concurrency buys no extra guesses.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import math
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import ConsoleUser

PREFIX = "scrypt"
# n=2^14, r=8: 16 MiB and ~50 ms per check on one core, OWASP's minimum for scrypt;
# slow enough for guessing, fast enough that a login never feels it
N, R, P = 2 ** 14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
# a hash from the config is trusted, but bounded anyway: a typo'd n must not eat the RAM
MAX_N, MAX_R, MAX_P = 2 ** 20, 32, 16
MAX_PASSWORD = 1024  # characters; scrypt takes any length, a form field should not
MIN_PASSWORD = 8


class BadHash(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P,
                  salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password, salt, n, r, p, HASH_BYTES)
    return f"{PREFIX}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    # maxmem: scrypt needs 128*n*r bytes (plus p lanes); the default cap is 32 MiB
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=128 * n * r * (p + 1) + 1024 * 1024, dklen=size)


def parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != PREFIX:
        raise BadHash("not scrypt$<n>$<r>$<p>$<salt>$<hash>")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise BadHash("n, r, p must be integers and salt and hash base64") from None
    if not (1 < n <= MAX_N and n & (n - 1) == 0 and 0 < r <= MAX_R and 0 < p <= MAX_P):
        raise BadHash(f"scrypt parameters out of range (n a power of 2 up to {MAX_N}, "
                      f"r up to {MAX_R}, p up to {MAX_P})")
    if not salt or not 16 <= len(digest) <= 64:
        raise BadHash("salt empty or hash of a wrong length")
    return n, r, p, salt, digest


_dummy: str | None = None


def _dummy_hash() -> str:
    """A hash no password is known for: unknown users cost the same scrypt."""
    global _dummy
    if _dummy is None:
        _dummy = hash_password(secrets.token_urlsafe(24))
    return _dummy


def verify_password(password: str, encoded: str | None) -> bool:
    """True if `password` matches `encoded`; False for a malformed or missing hash
    (after the same amount of work)."""
    try:
        n, r, p, salt, digest = parse_hash(encoded if encoded is not None else "")
    except BadHash:
        n, r, p, salt, digest = parse_hash(_dummy_hash())
        encoded = None
    candidate = _scrypt(password[:MAX_PASSWORD], salt, n, r, p, len(digest))
    return hmac.compare_digest(candidate, digest) and encoded is not None


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the expected one."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def password_verb(args: argparse.Namespace) -> int:
    """`herald console-password`: a password on stdin -> its hash on stdout.

    On a terminal it asks twice without echo; from a pipe it reads the first line, so
    `printf '%s\\n' "$PW" | herald console-password` works in scripts."""
    stdin = sys.stdin
    try:
        if stdin.isatty():
            first = getpass.getpass("console password: ")
            if getpass.getpass("again: ") != first:
                print("console-password: the two entries differ", file=sys.stderr)
                return 2
            password = first
        else:
            password = stdin.readline().rstrip("\r\n")
    except (EOFError, KeyboardInterrupt, UnicodeDecodeError):
        print("console-password: no password read from stdin", file=sys.stderr)
        return 2
    if len(password) < MIN_PASSWORD or len(password) > MAX_PASSWORD:
        print(f"console-password: a password must have {MIN_PASSWORD} to {MAX_PASSWORD} "
              f"characters (got {len(password)})", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


# ----------------------------------------------------------------- sessions


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    expires: float  # monotonic
    flash: list[str] = field(default_factory=list)  # one-shot notes for the next page

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    def pop_flash(self) -> list[str]:
        out, self.flash = self.flash, []
        return out


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """Sessions in memory, bounded: past `limit`, the oldest login goes first."""

    def __init__(self, ttl: float, *, limit: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, user: str, role: str) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(user=user, role=role, csrf=secrets.token_urlsafe(32),
                          expires=self.clock() + self.ttl)
        with self._lock:
            self._sweep()
            self._sessions[_key(session_id)] = session
            while len(self._sessions) > self.limit:
                self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if session.expires <= self.clock():
                del self._sessions[key]
                return None
            return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(_key(session_id), None)

    def _sweep(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)


# ----------------------------------------------------------------- login limits


@dataclass(frozen=True)
class Attempt:
    """A login allowed to check its password: counted as a failure from the moment it
    was allowed until `succeeded` takes it back."""

    user: str
    address: str
    at: float


class LoginLimiter:
    """Failed logins in a sliding window, per user name and per remote address.

    A user name is limited tightly (guessing one account's password), an address more
    loosely (one office behind one NAT); unknown names are counted like known ones so
    the answers do not tell them apart.

    Checking the limit and counting the try are one step under one lock (`attempt`):
    a password check in flight counts as a failure until it succeeds, so however many
    logins arrive at once, at most the limit's number of passwords are checked in a
    window. (Checking first and counting after the scrypt let every request that
    arrived during one check through: 64 at once got 8 checks for a limit of 5.)
    Memory is bounded: past `keys` tracked names or addresses, the least recently
    tried are forgotten."""

    def __init__(self, *, per_user: int = 5, per_address: int = 20, window: float = 900.0,
                 keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = {"user": per_user, "address": per_address}
        self.window = window
        self.keys = keys
        self.clock = clock
        self._lock = threading.Lock()
        self._fails: dict[str, OrderedDict[str, deque[float]]] = {
            "user": OrderedDict(), "address": OrderedDict()}

    def _recent(self, kind: str, key: str, now: float) -> deque[float] | None:
        times = self._fails[kind].get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._fails[kind][key]
            return None
        return times

    def attempt(self, user: str, address: str) -> Attempt | str:
        """An Attempt to check one password, already counted; or why not (a message
        for the person) when the user or the address is at its limit."""
        now = self.clock()
        with self._lock:
            for kind, key in (("user", user), ("address", address)):
                times = self._recent(kind, key, now)
                if times is not None and len(times) >= self.limits[kind]:
                    return self._refusal(kind, times[0] + self.window - now)
            for kind, key in (("user", user), ("address", address)):
                table = self._fails[kind]
                times = table.pop(key, None) or deque()
                times.append(now)
                table[key] = times  # most recent last
                while len(table) > self.keys:
                    table.popitem(last=False)
        return Attempt(user, address, now)

    @staticmethod
    def _refusal(kind: str, wait: float) -> str:
        minutes = math.ceil(max(1.0, wait) / 60)
        who = "this user" if kind == "user" else "your address"
        return (f"too many failed logins for {who}; try again in {minutes} "
                f"minute{'s' if minutes != 1 else ''} / 登录失败次数过多，"
                f"请 {minutes} 分钟后再试")

    def failed(self, attempt: Attempt) -> None:
        """The password was wrong: the try stays counted (it was from the start)."""

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the user's failures are forgiven and this try no
        longer counts against the address (its earlier failures still do)."""
        with self._lock:
            self._fails["user"].pop(attempt.user, None)
            times = self._fails["address"].get(attempt.address)
            if times is not None:
                try:
                    times.remove(attempt.at)
                except ValueError:
                    pass  # aged out of the window already
                if not times:
                    del self._fails["address"][attempt.address]


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    password_hash: str


def accounts(users: Mapping[str, ConsoleUser]) -> dict[str, Account]:
    """config.console.users -> name: Account (the hash revealed only here)."""
    return {name: Account(name=name, role=user.role, password_hash=user.password_hash.reveal())
            for name, user in users.items()}


def authenticate(table: Mapping[str, Account], user: str, password: str) -> Account | None:
    account = table.get(user)
    ok = verify_password(password, account.password_hash if account else None)
    return account if ok and account is not None else None


__all__ = ["Account", "Attempt", "BadHash", "LoginLimiter", "Session", "SessionStore", "accounts",
           "authenticate", "hash_password", "parse_hash", "password_verb", "tokens_equal",
           "verify_password"]
