"""The manual stays true: every repository path, `herald VERB`, config key and relative
link that README.md, CHANGELOG.md and docs/*.md name is real, and what they tell a
person to run works as written: the README's quick start, the SQLite backups, the
nginx server block, the database grants of docs/operations.md.

The counts of what was checked are printed (`pytest -s tests/test_docs.py`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import scheduler
from config.schema import SCHEMA
from tests.support import ROOT

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = {p: p.read_text(encoding="utf-8") for p in DOCS}
# Files a reader makes by following the docs (or placeholders for a site's own): named
# on purpose, never in the repository.
NOT_IN_TREE = {"demo-run/config.yaml", "quickstart-run/herald.db", "sandbox-run/herald.db",
               "sandbox.yaml"}
EXTENSIONS = (".py", ".yaml", ".yml", ".md", ".sql", ".service", ".json", ".sh", ".toml",
              ".txt", ".js", ".php", ".java", ".go", ".mod", ".png")
TRACKED = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
TOP = {p.split("/", 1)[0] for p in TRACKED if "/" in p}  # the repository's folders
NAMES = {Path(p).name for p in TRACKED}


def _code_spans(text: str) -> list[str]:
    """Inline code (`...`) outside fenced blocks, and every line of the fenced blocks."""
    spans: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            spans.append(line)
        else:
            spans += re.findall(r"`([^`\n]+)`", line)
    return spans


# ---- paths ----------------------------------------------------------------------------

def _paths(text: str) -> set[str]:
    found: set[str] = set()
    for span in _code_spans(text):
        for token in re.findall(r"(?<![\w/.:$-])([A-Za-z0-9_][\w.-]*(?:/[\w.-]*)*)", span):
            token = token.rstrip(".")
            if token.startswith(("http", "www.")) or "<" in token:
                continue
            first = token.split("/", 1)[0]
            if "/" in token and first in TOP:
                found.add(token)  # a path into one of the repository's folders
            elif "/" in token and token.endswith(EXTENSIONS):
                found.add(token)  # another relative path to a file: must exist too
            elif ("/" not in token and token.endswith(EXTENSIONS)
                  and SCHEMA.find(token) is None):  # (log.sql is a key)
                found.add(token)  # a bare file name (scheduler.py, quickstart.yaml)
    return found


def _missing_path(token: str) -> bool:
    if token in NOT_IN_TREE:
        return False
    if "/" not in token:  # a bare name: at the top, or a file of that name in the tree
        return not (ROOT / token).exists() and token not in NAMES
    return not (ROOT / token).exists()


def test_every_repository_path_the_docs_name_exists() -> None:
    named = {p: _paths(t) for p, t in TEXT.items()}
    missing = {p.relative_to(ROOT).as_posix(): sorted(x for x in found if _missing_path(x))
               for p, found in named.items()}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"the docs name paths that are not in the repository: {missing}"
    total = len(set().union(*named.values()))
    assert total > 80, total  # the extraction works (the manual names many files)
    print(f"\npaths checked: {total}")


# ---- verbs ----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    return scheduler.parser()


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(found.choices)


HERALD = re.compile(r"(?:(?<=\.venv/bin/)|(?<=^)|(?<=`))herald((?:\s+--config\s+\S+)?)"
                    r"\s+([a-z][a-z-]*)(?:\s+([a-z][a-z-]*))?")


def _verbs(text: str) -> set[tuple[str, str | None]]:
    found: set[tuple[str, str | None]] = set()
    for line in text.splitlines():
        for m in HERALD.finditer(line.strip()):
            found.add((m.group(2), m.group(3)))
        for m in re.finditer(r"`herald ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", line):
            found.add((m.group(1), m.group(2)))
    return found


def test_every_herald_verb_the_docs_name_is_in_the_parser() -> None:
    verbs = _subcommands(_parser())
    seen: set[str] = set()
    wrong: dict[str, list[str]] = {}
    for path, text in TEXT.items():
        for verb, action in _verbs(text):
            seen.add(verb)
            if verb not in verbs:
                wrong.setdefault(path.name, []).append(verb)
            elif action and any(isinstance(a, argparse._SubParsersAction)
                                for a in verbs[verb]._actions):
                if action not in _subcommands(verbs[verb]):
                    wrong.setdefault(path.name, []).append(f"{verb} {action}")
    assert not wrong, f"verbs the CLI does not have: {wrong}"
    # the manual covers the CLI: every verb is named somewhere
    assert set(verbs) - seen == set(), f"verbs the docs never name: {set(verbs) - seen}"
    print(f"\nverbs checked: {len(seen)} ({', '.join(sorted(seen))})")


def test_one_spelling_of_the_command() -> None:
    """`.venv/bin/herald VERB` in the docs, the units, the example config and the examples'
    READMEs: never `scheduler.py VERB` or `python scheduler.py`."""
    files = [*DOCS, *sorted((ROOT / "systemd").iterdir()),
             *sorted((ROOT / "examples").glob("**/README.md")), ROOT / "monitoring/README.md"]
    verbs = "|".join(_subcommands(_parser()))
    bad = {f.relative_to(ROOT).as_posix(): m.group(0) for f in files
           for m in [re.search(rf"scheduler\.py\s+({verbs})\b|python3? scheduler\.py",
                               f.read_text(encoding="utf-8"))] if m}
    assert not bad, bad
    # in shell blocks a command is the venv's herald (or the alias operations.md defines)
    loose = [f"{p.name}: {line.strip()}" for p, text in TEXT.items()
             for block in re.findall(r"(?ms)^```sh\n(.*?)^```", text)
             for line in block.splitlines()
             if re.match(r"\s*herald\s+[a-z]", line) and "alias herald=" not in block]
    assert not loose, loose


# ---- config keys ----------------------------------------------------------------------

def _declared() -> list[re.Pattern[str]]:
    out = []
    for decl in SCHEMA.decls:
        parts = [r"[^.\s]+" if part == "<name>" else re.escape(part)
                 for part in decl.path.split(".")]
        out.append(re.compile(r"\.".join(parts) + r"(_file)?"))
    return out


SECTIONS = {d.path.split(".", 1)[0] for d in SCHEMA.decls}
KEY = re.compile(r"(?<![\w.$/{-])([a-z_]+(?:\.(?:[a-z_]+|<[a-z]+>|\*))+)(?![\w/(-])")


def _keys(text: str) -> set[str]:
    found = set()
    for span in _code_spans(text):
        for token in KEY.findall(span):
            if (token.split(".", 1)[0] in SECTIONS and not token.endswith(EXTENSIONS)
                    and not token.endswith((".com", ".cn"))  # a host: sms.tencentcloudapi.com
                    and not re.search(rf"\b(from|import) {re.escape(token)}\b", span)):
                found.add(token)
    return found


def test_every_config_key_the_docs_name_is_declared() -> None:
    patterns = _declared()

    def declared(key: str) -> bool:
        text = re.sub(r"<[a-z]+>|\*", "X", key)
        if any(p.fullmatch(text) for p in patterns):
            return True
        # a placeholder the docs chose (retention.<status>, jobs.*.every): any declared
        # name there; a section named whole (sms, apps.<name>.push)
        loose = re.compile(r"\.".join(r"[^.]+" if re.fullmatch(r"<[a-z]+>|\*", part)
                                      else re.escape(part) for part in key.split(".")))
        return any(loose.fullmatch(d.path) or d.path.startswith(key + ".")
                   for d in SCHEMA.decls)

    keys = {p.name: _keys(t) for p, t in TEXT.items()}
    wrong = {name: sorted(k for k in found if not declared(k)) for name, found in keys.items()}
    wrong = {k: v for k, v in wrong.items() if v}
    assert not wrong, f"config keys config/model.py does not declare: {wrong}"
    total = set().union(*keys.values())
    assert len(total) > 30, total
    print(f"\nconfig keys checked: {len(total)}")


# ---- links ----------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip().lower())
    text = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"(?ms)^```.*?^```", "", text)
    return {slug(h) for h in re.findall(r"(?m)^#{1,6} (.+)$", text)}


def test_every_relative_link_resolves_with_its_anchor() -> None:
    checked = 0
    broken: list[str] = []
    for path, text in TEXT.items():
        prose = re.sub(r"(?ms)^```.*?^```", "", text)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check
            checked += 1
            file, _, frag = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.name}: {target} (no such file)")
            elif frag and dest.suffix == ".md" and frag not in anchors(dest):
                broken.append(f"{path.name}: {target} (no heading #{frag})")
    assert not broken, broken
    assert checked > 40, checked
    print(f"\nlinks checked: {checked}")


def test_the_slug_is_githubs() -> None:
    assert slug("Against the sandbox, by hand") == "against-the-sandbox-by-hand"
    assert slug("13. Upgrades and rollback") == "13-upgrades-and-rollback"
    assert slug("Statuses and what lands in `error`") == "statuses-and-what-lands-in-error"
    assert slug("nginx: TLS for the push and callback paths") == \
        "nginx-tls-for-the-push-and-callback-paths"


def test_the_readme_is_a_front_door() -> None:
    lines = TEXT[ROOT / "README.md"].count("\n")
    assert lines <= 250, lines
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in TEXT[ROOT / "README.md"], f"the map misses {doc.name}"
    print(f"\nREADME.md: {lines} lines")


def test_every_metric_is_in_the_operations_table() -> None:
    exported = set(re.findall(r'"(herald_[a-z_]+)"', (ROOT / "metrics.py").read_text()))
    table = TEXT[ROOT / "docs" / "operations.md"].split("### Metrics", 1)[1]
    documented = set(re.findall(r"^\| `(herald_[a-z_]+)` \|", table, re.M))
    # prometheus_client adds _total to counters and _info to info metrics
    missing = {m for m in exported
               if not {m, m + "_total", m + "_info"} & documented}
    assert not missing, f"metrics docs/operations.md does not list: {missing}"


def _layout() -> str:
    text = TEXT[ROOT / "docs" / "architecture.md"]
    section = text.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def test_the_layout_names_only_what_exists_and_everything_at_the_top() -> None:
    """docs/architecture.md's Layout block: each entry exists, and every top-level module
    and package (and every folder of the repository) is there."""
    entries = [line.split()[0] for line in _layout().splitlines()
               if line and not line.startswith(" ")]
    assert entries, "no Layout block found"
    missing = [e for e in entries if not (ROOT / e).exists()]
    assert not missing, f"Layout lists what is not in the tree: {missing}"
    listed = {e.rstrip("/") for e in entries}
    top = {p.name for p in ROOT.glob("*.py")} | (TOP - {"tests"}) | {"tests"}
    unlisted = sorted(top - listed)
    assert not unlisted, f"Layout leaves out: {unlisted}"


def test_the_layout_names_every_channel_and_job_module() -> None:
    layout = _layout()
    for folder in ("channels", "jobs"):
        for mod in (ROOT / folder).glob("*.py"):
            if mod.stem != "__init__":
                assert mod.stem in layout, f"Layout does not mention {folder}/{mod.name}"


def test_version_matches_the_changelog() -> None:
    from version import __version__

    top = re.search(r"(?m)^## (\d+\.\d+\.\d+) \(\d{4}-\d\d-\d\d\), schema (\d+)$",
                    TEXT[ROOT / "CHANGELOG.md"])
    assert top, "CHANGELOG.md has no '## X.Y.Z (date), schema N' entry"
    from db.schema import VERSION

    assert (top[1], int(top[2])) == (__version__, VERSION)
    # every schema version has its release, in the changelog and the upgrade table
    from db.schema import DESCRIPTIONS

    ops = TEXT[ROOT / "docs" / "operations.md"]
    for version in DESCRIPTIONS:
        assert re.search(rf"(?m)^## \d+\.\d+\.\d+ \(.*\), schema {version}$",
                         TEXT[ROOT / "CHANGELOG.md"]), version
        assert re.search(rf"(?m)^\| {version} \| \d+\.\d+\.\d+ \|", ops), version
    ran = subprocess.run([sys.executable, str(ROOT / "scheduler.py"), "--version"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert ran.stdout.strip() == f"herald {top[1]}"


# ---- what the docs tell a person to run -------------------------------------------------

def _block(path: Path, marker: str, lang: str) -> str:
    after = TEXT[path].split(f"<!-- {marker} -->\n", 1)[1]
    assert after.startswith(f"```{lang}\n"), marker
    return after.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="Debian's sqlite3 not installed")
def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    """The block as the README prints it, in a copy of Herald's folder layout (the venv,
    templates.yaml, quickstart.yaml), with one change: the sandbox's port, free here
    instead of 8081 (another run may hold it). Between the sandbox's start and the first
    command that needs it the test waits for its port."""
    script = _block(ROOT / "README.md", "quick-start", "sh")
    port = _free_port()
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    shutil.copy(ROOT / "templates.yaml", tmp_path)
    config = (ROOT / "quickstart.yaml").read_text(encoding="utf-8")
    assert "api_base: http://127.0.0.1:8081" in config
    (tmp_path / "quickstart.yaml").write_text(config.replace(":8081", f":{port}"))
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if "-m sandbox.wechat &" in line)
    lines[start] = lines[start].replace("-m sandbox.wechat &", f"-m sandbox.wechat --port {port} &")
    lines.insert(start + 1, f"until (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null; "
                            "do sleep 0.1; done")
    (tmp_path / "quickstart.sh").write_text("set -e\n" + "\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HERALD_CONFIG", None)
    env.pop("HERALD_DATABASE", None)
    ran = subprocess.run(["bash", "quickstart.sh"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # list: row 1 sent, with WeChat's msgid
    assert re.search(r"(?m)^\s+1\s+success\s+default\s+order_status\s+oUser1\s+1\s+.*msgid \d+$",
                     ran.stdout), ran.stdout
    # show 1: its story, in words, and its history
    assert "row 1: success" in ran.stdout and "delivered to WeChat" in ran.stdout
    assert re.search(r"attempt subscribe errcode 0 .*accepted \(msgid \d+\)", ran.stdout)
    db = sqlite3.connect(tmp_path / "quickstart-run" / "herald.db")
    assert db.execute("SELECT status, params FROM msg_list").fetchall() == [
        ("success", '["Coffee", "12.50", "shipped", "thanks"]')]
    db.close()


def test_the_sqlite_backups_copy_every_row(tmp_path: Path) -> None:
    """Section 12's `.backup` and `VACUUM INTO`, on a queue in WAL mode with an open
    writer (as the daemon keeps it), the copies read back row for row."""
    if shutil.which("sqlite3") is None:
        pytest.skip("Debian's sqlite3 not installed")
    ops = TEXT[ROOT / "docs" / "operations.md"]
    section = ops.split("### The SQLite file", 1)[1].split("### PostgreSQL and MariaDB", 1)[0]
    commands = [line.removeprefix("# or compacted: ") for line in section.splitlines()
                if "sqlite3 /var/lib/herald/herald.db" in line]
    assert len(commands) == 2, commands
    live = tmp_path / "herald.db"
    db = sqlite3.connect(live)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE msg_list (id INTEGER PRIMARY KEY, template TEXT)")
    db.executemany("INSERT INTO msg_list (template) VALUES (?)", [(f"t{i}",) for i in range(500)])
    db.commit()  # (still open: the rows may sit in -wal, which cp would miss)
    for n, command in enumerate(commands):
        copy = tmp_path / f"copy{n}.db"
        command = command.replace("/var/lib/herald/herald.db", str(live)).replace(
            "/var/backups/herald/herald.db", str(copy))
        subprocess.run(command, shell=True, check=True, timeout=60)  # noqa: S602 - the doc's
        got = sqlite3.connect(copy)
        assert got.execute("SELECT count(*), max(template) FROM msg_list").fetchone() == (
            500, "t99")
        got.close()
    db.close()


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in re.sub(r"(?m)--.*$", "", sql).split(";") if s.strip()]


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_the_applications_role_may_queue_and_read_and_nothing_else(tmp_path: Path,
                                                                    engine: str) -> None:
    """docs/operations.md's grants for the inserting application, run as written (the
    role's name and the database's changed to this test's), then that role's own
    connection: it inserts a row and reads it back; it cannot change or delete a row,
    nor read a token."""
    from urllib.parse import urlsplit, urlunsplit

    from db.schema import init_schema
    from tests.bound import connect
    from tests.conftest import database_url

    url = database_url(engine, tmp_path)  # Herald's tables dropped: a fresh database
    herald = connect(url)
    init_schema(herald)
    parts = urlsplit(url)
    dbname = parts.path.lstrip("/")
    role = f"herald_docs_app_{os.getpid()}"
    ops = ROOT / "docs" / "operations.md"
    if engine == "postgres":
        sql = _block(ops, "postgres-roles", "sql") + _block(ops, "postgres-grants", "sql")
        wanted = [s for s in _statements(sql) if "shop_app" in s]
        wanted = [s.replace("shop_app", role).replace("DATABASE herald", f"DATABASE {dbname}")
                  for s in wanted]
        cleanup = [f"DROP OWNED BY {role}", f"DROP ROLE IF EXISTS {role}"]
    else:
        wanted = [s.replace("shop_app", role).replace("'localhost'", "'127.0.0.1'")
                  .replace("herald.msg_list", f"`{dbname}`.msg_list")
                  for s in _statements(_block(ops, "mysql-grants", "sql")) if "shop_app" in s]
        cleanup = [f"DROP USER IF EXISTS '{role}'@'127.0.0.1'"]
    assert len(wanted) >= 2, wanted  # the role and its grants
    app_url = urlunsplit((parts.scheme, f"{role}:app-password@{parts.hostname}:{parts.port}",
                          parts.path, parts.query, ""))
    try:
        with herald.connection_context():
            for stmt in cleanup[-1:] + wanted:
                herald.execute_sql(stmt)
        app = connect(app_url)
        with app.connection_context():
            insert = "INSERT INTO msg_list (template, openid, params) VALUES (%s, %s, %s)"
            values = ("order_status", "oUser1", '["Coffee", "12.50", "shipped", "thanks"]')
            if engine == "postgres":
                rid = app.execute_sql(insert + " RETURNING id", values).fetchone()[0]
            else:
                rid = app.execute_sql(insert, values).lastrowid
            assert app.execute_sql(f"SELECT status FROM msg_list WHERE id = {int(rid)}"
                                   ).fetchone() == ("wait",)
            for refused in (f"UPDATE msg_list SET params = '[]' WHERE id = {int(rid)}",
                            f"DELETE FROM msg_list WHERE id = {int(rid)}",
                            "SELECT token FROM access_token"):
                with pytest.raises(Exception, match=r"(?i)permission denied|command denied"):
                    app.execute_sql(refused)
                if engine == "postgres":
                    app.rollback()
        app.close()
    finally:
        with herald.connection_context():
            for stmt in cleanup:
                herald.execute_sql(stmt)
        herald.close()


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed (.ci/run does)")
def test_the_nginx_server_block_passes_nginx_t(tmp_path: Path) -> None:
    """docs/operations.md's `server {}` inside a minimal http block, with a throwaway
    certificate where Let's Encrypt's would be and every path nginx writes in tmp."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald.example.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    block = _block(ROOT / "docs" / "operations.md", "nginx-server", "nginx")
    live = "/etc/letsencrypt/live/herald.example.com/"
    assert block.count(live) == 2
    block = block.replace(live + "fullchain.pem", str(tmp_path / "cert.pem")).replace(
        live + "privkey.pem", str(tmp_path / "key.pem"))
    temp = " ".join(f"{k}_temp_path {tmp_path / k};"
                    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\n"
        f"events {{}}\nhttp {{\naccess_log off;\n{temp}\n{block}\n}}\n")
    ran = subprocess.run([shutil.which("nginx") or "nginx", "-t", "-p", str(tmp_path),
                          "-c", str(tmp_path / "nginx.conf")],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "test is successful" in ran.stderr
    # only the push and callback paths reach Herald
    assert re.findall(r"location (\S+) \{", block) == ["/wechat/push", "/tencent/sms/status/",
                                                       "/"]
    assert block.count("proxy_pass http://127.0.0.1:8080;") == 2
