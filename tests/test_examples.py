"""examples/: each client, run as a developer runs it, against a real Herald.

For each engine (SQLite, PostgreSQL, MariaDB) a fresh database gets the schema, the
WeChat sandbox listens on loopback and a real `herald run` daemon delivers. Each example
(Python, PHP, Node.js, Java, Go) runs as a subprocess, in a shell whose zone is
Asia/Shanghai (TZ, and PGTZ for the PostgreSQL drivers that read it), and:

- inserts one row, due a second from now, and prints the outcome Herald wrote: status
  success and the msgid the sandbox returned (above 2**53: a float would lose digits),
  with send_at the UTC instant it meant and the Chinese params intact;
- given a dedup_key another writer already used, follows that earlier row instead of
  failing, and prints its outcome (here: fail, errcode 43101, Herald's error text).

An example whose toolchain or driver is missing is skipped with the reason; under CI
(the CI environment variable, which .ci/run's runner sets) that is a failure instead:
`examples/install.sh`, which .ci/run calls, installs every one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from peewee import Database

from db.connection import init_schema
from db.models import MsgList
from sandbox.wechat import Sandbox
from tests.bound import bind, connect
from tests.conftest import database_url, template_keys
from tests.support import APPID, ROOT, SECRET, DaemonProcess, write_config

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "examples"
ENGINES = ("sqlite", "postgres", "mysql")
IN_CI = bool(os.environ.get("CI"))
ZONE = "Asia/Shanghai"  # UTC+8: a local time written as if UTC would be 8 hours off
DELAY = 1  # seconds: the example schedules its row this far ahead
RUN_TIMEOUT = 60.0  # the examples get --timeout 30
# what every example sends by default: ["拿铁 Latte", "12.50", "已发货", "谢谢惠顾"]
DEFAULT_PARAMS = ["拿铁 Latte", "12.50", "已发货", "谢谢惠顾"]
FIELDS = ("status", "errcode", "error", "msgid", "receipt")


# -- the examples ---------------------------------------------------------------------


@dataclass
class Example:
    """How to run one example: `missing` says why it cannot run on an engine (or None),
    `prepare` builds it once per session and gives the command."""

    name: str
    prepare: Callable[[Path], list[str]]  # build dir -> the command to run
    missing: Callable[[str], str | None]  # engine -> why it cannot run, or None
    command: list[str] = field(default_factory=list)  # set by the first prepare
    error: str | None = None  # a failed build, reported by every later test too


def _which(tool: str, package: str) -> str | None:
    return None if shutil.which(tool) else f"{tool} not found (Debian: apt-get install {package})"


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res


# Python: the interpreter running these tests has the pinned drivers


def _python_prepare(build: Path) -> list[str]:
    return [sys.executable, str(EXAMPLES / "python" / "herald_example.py")]


def _python_missing(engine: str) -> str | None:
    return None


# PHP: PDO with Debian's pdo_sqlite, pdo_pgsql, pdo_mysql

PHP_EXT = {"sqlite": ("pdo_sqlite", "php-sqlite3"), "postgres": ("pdo_pgsql", "php-pgsql"),
           "mysql": ("pdo_mysql", "php-mysql")}


def _php_prepare(build: Path) -> list[str]:
    return ["php", str(EXAMPLES / "php" / "herald_example.php")]


def _php_missing(engine: str) -> str | None:
    if reason := _which("php", "php-cli"):
        return reason
    ext, package = PHP_EXT[engine]
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True).stdout.split()
    return None if ext in modules else f"PHP's {ext} missing (Debian: apt-get install {package})"


# Node.js: pg, mysql2, better-sqlite3 from npm, in examples/node/node_modules

NODE_PACKAGES = {"sqlite": "better-sqlite3", "postgres": "pg", "mysql": "mysql2"}


def _node_prepare(build: Path) -> list[str]:
    return ["node", str(EXAMPLES / "node" / "herald_example.js")]


def _node_missing(engine: str) -> str | None:
    if reason := _which("node", "nodejs"):
        return reason
    package = NODE_PACKAGES[engine]
    if not (EXAMPLES / "node" / "node_modules" / package / "package.json").exists():
        return f"npm package {package} missing (bash examples/install.sh, or npm ci there)"
    return None


# Java: JDBC drivers from Debian, in /usr/share/java

JDBC_JARS = {"sqlite": ("sqlite-jdbc.jar", "libxerial-sqlite-jdbc-java"),
             "postgres": ("postgresql.jar", "libpostgresql-jdbc-java"),
             "mysql": ("mariadb-java-client.jar", "libmariadb-java")}
JAVA_LIB = Path("/usr/share/java")
GSON = (JAVA_LIB / "gson.jar", "libgoogle-gson-java")  # the example's JSON encoder


def _java_prepare(build: Path) -> list[str]:
    classes = build / "java"
    _run(["javac", "-d", str(classes), "-cp", str(GSON[0]),
          str(EXAMPLES / "java" / "HeraldExample.java")])
    jars = [str(JAVA_LIB / jar) for jar, _ in JDBC_JARS.values() if (JAVA_LIB / jar).exists()]
    return ["java", "-cp", ":".join([str(classes), str(GSON[0]), *jars]), "HeraldExample"]


def _java_missing(engine: str) -> str | None:
    if reason := _which("javac", "default-jdk-headless"):
        return reason
    if not GSON[0].exists():
        return f"{GSON[0]} missing (Debian: apt-get install {GSON[1]})"
    jar, package = JDBC_JARS[engine]
    if not (JAVA_LIB / jar).exists():
        return f"{JAVA_LIB / jar} missing (Debian: apt-get install {package})"
    return None


# Go: database/sql with Debian's driver sources, built offline

GO_DRIVERS = {"sqlite": ("github.com/mattn/go-sqlite3", "golang-github-mattn-go-sqlite3-dev"),
              "postgres": ("github.com/lib/pq", "golang-github-lib-pq-dev"),
              "mysql": ("github.com/go-sql-driver/mysql", "golang-github-go-sql-driver-mysql-dev")}
GOCODE = Path("/usr/share/gocode/src")


def _go_prepare(build: Path) -> list[str]:
    binary = build / "herald-example-go"
    _run(["sh", str(EXAMPLES / "go" / "build-offline.sh"), str(binary)])
    return [str(binary)]


def _go_missing(engine: str) -> str | None:
    if reason := _which("go", "golang-go"):
        return reason
    missing = [pkg for path, pkg in GO_DRIVERS.values() if not (GOCODE / path).is_dir()]
    if missing:  # one binary links all three drivers
        return f"Go driver sources missing (Debian: apt-get install {' '.join(missing)})"
    return None


ALL = {e.name: e for e in (
    Example("python", _python_prepare, _python_missing),
    Example("php", _php_prepare, _php_missing),
    Example("node", _node_prepare, _node_missing),
    Example("java", _java_prepare, _java_missing),
    Example("go", _go_prepare, _go_missing),
)}


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("examples-build")


def example_command(name: str, engine: str, build: Path) -> list[str]:
    """The command to run example `name` on `engine`: skipped (failed under CI) if its
    toolchain is missing; built once per session."""
    ex = ALL[name]
    reason = ex.missing(engine)
    if reason:
        if IN_CI:
            pytest.fail(f"{name} example cannot run under CI: {reason} (.ci/run installs it)")
        pytest.skip(f"{name} example: {reason}")
    if ex.error:
        pytest.fail(ex.error)
    if not ex.command:
        try:
            ex.command = ex.prepare(build)
        except AssertionError as exc:  # a build that fails is the example's failure
            ex.error = str(exc)
            raise
    return ex.command


# -- a real Herald per engine ---------------------------------------------------------


@dataclass
class Herald:
    engine: str
    url: str
    db: Database
    sandbox: Sandbox
    daemon: DaemonProcess

    def row(self, row_id: int) -> MsgList:
        bind(self.db)  # other modules' tests may have pointed the models elsewhere
        with self.db.connection_context():
            return MsgList.get_by_id(row_id)

    def rows(self, **where: str) -> list[MsgList]:
        bind(self.db)
        with self.db.connection_context():
            query = MsgList.select()
            for name, value in where.items():
                query = query.where(getattr(MsgList, name) == value)
            return list(query)

    def insert(self, **cols: str) -> int:
        """A row written by some other part of the application, with plain SQL."""
        names = ", ".join(cols)
        marks = ", ".join([self.db.param] * len(cols))
        with self.db.connection_context():
            cur = self.db.execute_sql(f"INSERT INTO msg_list ({names}) VALUES ({marks})",
                                      list(cols.values()))
            if cur.lastrowid:
                return int(cur.lastrowid)
        (row,) = self.rows(dedup_key=cols["dedup_key"])
        return int(row.id)


@pytest.fixture(scope="module", params=ENGINES)
def herald(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Herald]:
    engine = request.param
    folder = tmp_path_factory.mktemp(f"herald-{engine}")
    url = database_url(engine, folder)  # skips a server engine without its URL
    db = connect(url)
    init_schema(db)
    with Sandbox(apps={APPID: SECRET}, templates=template_keys()) as sb:
        # dispatch polls each second: the test waits on delivery, not on the default minute
        cfg = write_config(folder, api_base=sb.url, database=url,
                           jobs={"dispatch": {"every": "1s"}})
        daemon = DaemonProcess(cfg, folder / "daemon.log").start()
        try:
            daemon.wait_ready()
            yield Herald(engine, url, db, sb, daemon)
        finally:
            daemon.stop()
            daemon.close()
            db.close()


def run_example(name: str, herald: Herald, build: Path, *args: str
                ) -> tuple[int, str, dict[str, str]]:
    """(exit code, stdout, the printed `key: value` lines) of one run."""
    cmd = example_command(name, herald.engine, build)
    url = herald.url
    if name == "go" and herald.engine == "postgres" and "sslmode" not in url:
        # lib/pq defaults to sslmode=require, where libpq (and Herald) prefer; the test
        # server has no TLS. The Go README says so.
        url += ("&" if "?" in url else "?") + "sslmode=disable"
    env = {**os.environ, "DATABASE_URL": url, "TZ": ZONE, "PGTZ": ZONE}
    try:
        res = subprocess.run([*cmd, *args, "--timeout", "30"], capture_output=True, text=True,
                             env=env, timeout=RUN_TIMEOUT, cwd=EXAMPLES / name)
    except subprocess.TimeoutExpired as exc:  # an example that hangs (say, on an open socket)
        pytest.fail(f"{name} on {herald.engine} still running after {RUN_TIMEOUT:.0f} s "
                    f"(--timeout 30):\n{exc.stdout!r}\n{exc.stderr!r}")
    printed = dict(re.findall(r"^(\w+): (.*)$", res.stdout, re.MULTILINE))
    detail = (f"{name} on {herald.engine} exited {res.returncode}\nstdout:\n{res.stdout}\n"
              f"stderr:\n{res.stderr}\ndaemon:\n{herald.daemon.tail()}")
    return res.returncode, detail, printed


def printed_as_written(row: MsgList) -> dict[str, str]:
    """The five outcome columns as an example must print them: NULL for NULL."""
    return {k: "NULL" if getattr(row, k) is None else str(getattr(row, k)) for k in FIELDS}


def row_id_of(printed: dict[str, str]) -> int:
    m = re.match(r"(\d+) ", printed.get("row", ""))
    assert m, f"no 'row: ID' line in {printed}"
    return int(m.group(1))


# -- the tests --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ALL))
def test_example_inserts_a_row_and_prints_what_herald_wrote(name: str, herald: Herald,
                                                           build_dir: Path) -> None:
    openid = f"oEx-{name}-{herald.engine}-send"
    key = f"example-{name}-{herald.engine}-{time.time_ns()}"
    before = datetime.now(UTC)
    code, detail, printed = run_example(name, herald, build_dir, "--openid", openid,
                                        "--dedup-key", key, "--delay", str(DELAY))
    after = datetime.now(UTC)
    assert code == 0, detail

    (row,) = herald.rows(openid=openid)
    assert row_id_of(printed) == row.id and "inserted" in printed["row"], detail
    # what Herald wrote, printed as it is
    assert {k: printed.get(k) for k in FIELDS} == printed_as_written(row), detail
    assert row.status == "success" and row.dedup_key == key
    # the msgid is the sandbox's, every digit: it is above 2**53
    (sent,) = [a for a in herald.sandbox.accepted if a["touser"] == openid]
    assert printed["msgid"] == sent["msgid"] and int(sent["msgid"]) > 2**53
    # params went in as a JSON array of strings, the Chinese text intact to WeChat
    assert json.loads(row.params) == DEFAULT_PARAMS
    assert sent["data"]["thing2"] == {"value": "拿铁 Latte"}
    assert sent["data"]["amount3"] == {"value": "12.50元"}
    # send_at is the UTC instant a second ahead, though the example's zone is UTC+8
    # (a whole second: an example may drop the fraction)
    assert row.send_at is not None
    lo, hi = before + timedelta(seconds=DELAY - 1), after + timedelta(seconds=DELAY + 1)
    assert lo <= row.send_at <= hi, f"send_at {row.send_at} not in [{lo}, {hi}]\n{detail}"


@pytest.mark.parametrize("name", list(ALL))
def test_example_follows_the_earlier_row_of_a_taken_dedup_key(name: str, herald: Herald,
                                                             build_dir: Path) -> None:
    # another writer queued this event first, for a user who has unsubscribed: it fails
    key = f"example-{name}-{herald.engine}-taken-{time.time_ns()}"
    first = f"oEx-{name}-{herald.engine}-first"
    herald.sandbox.unsubscribe(first)
    earlier = herald.insert(template="order_status", openid=first, dedup_key=key,
                            params=json.dumps(["Tea", "3.00", "shipped", "ok"]))
    second = f"oEx-{name}-{herald.engine}-second"
    code, detail, printed = run_example(name, herald, build_dir, "--openid", second,
                                        "--dedup-key", key)
    assert code == 3, detail  # 3: the row ended fail (or cancelled)

    assert row_id_of(printed) == earlier and "already queued" in printed["row"], detail
    assert herald.rows(openid=second) == []  # no second row
    row = herald.row(earlier)
    assert row.status == "fail" and row.errcode == 43101, detail
    assert {k: printed.get(k) for k in FIELDS} == printed_as_written(row), detail
    assert printed["error"].startswith("43101"), detail
