"""What the benchmarks share: the sandbox subprocess, databases, bulk fills, CPU and RSS.

Benchmarks are run from the project folder (`python bench/drain.py`); this module puts
the project on sys.path so they import Herald's own modules, exactly as the daemon does.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from peewee import Database  # noqa: E402

from config import Config, config_from_dict  # noqa: E402
from db.connection import dialect_of, init_schema  # noqa: E402
from db.models import MsgList  # noqa: E402
from tests import support  # noqa: E402
from tests.bound import connect  # noqa: E402

APPID, SECRET = "wxbench00000000001", "bench-secret-0123456789"
TEMPLATE = "order_status"
PARAMS = '["Coffee", 12.5, "shipped", "thanks"]'
DIALECTS = ("sqlite", "postgres", "mysql")
# The servers the brief names. The benchmarks use their own database on them
# (herald_bench, created on demand) rather than `test`: they drop and refill msg_list,
# which would pull the table out from under a test run going on at the same time.
DEFAULT_SERVER_URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
}
BENCH_DB_NAME = "herald_bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kb = int(m.group(1)) if m else 0
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
    }


# --------------------------------------------------------------------------- CPU and memory


def self_cpu() -> float:
    """User+system CPU seconds of this process (all its threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_cpu(pid: int) -> float:
    """User+system CPU seconds of another process, all threads, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may hold spaces; the fields after its closing ')' are fixed
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _status_kb(key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs), so a phase's
    peak is its own and not that of a fill or an earlier phase."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples VmRSS in a thread: the peak of one phase, in MB.

    ru_maxrss is a process-lifetime peak and cannot be reset, so it would report a
    fill or an earlier phase; VmHWM after reset_peak_rss() is the kernel's own peak and
    catches spikes between samples, and the samples show the curve."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.peak_kb = 0
        self.start_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)
        self.hwm_reset = False

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.peak_kb = max(self.peak_kb, _status_kb("VmRSS"))

    def __enter__(self) -> RssSampler:
        self.hwm_reset = reset_peak_rss()
        self.start_kb = _status_kb("VmRSS")
        self.peak_kb = self.start_kb
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _status_kb("VmRSS"))
        if self.hwm_reset:
            self.peak_kb = max(self.peak_kb, _status_kb("VmHWM"))

    @property
    def peak_mb(self) -> float:
        return round(self.peak_kb / 1024, 1)

    @property
    def start_mb(self) -> float:
        return round(self.start_kb / 1024, 1)


# --------------------------------------------------------------------------- the sandbox


class SandboxChild:
    """`python -m sandbox.<name>` with a port file; GET/POST its /_sandbox/ controls."""

    def __init__(self, workdir: Path, name: str, *args: str) -> None:
        port_file = workdir / f"{name}.port"
        self._log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"sandbox.{name}", "--port", "0", "--port-file",
             str(port_file), *args], cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} sandbox did not start: "
                                   f"{(workdir / f'{name}.log').read_text()}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def control(self, method: str, name: str) -> Any:
        data = b"{}" if method == "POST" else None
        req = urllib.request.Request(f"{self.url}/_sandbox/{name}", data=data, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class SandboxProcess(support.SandboxProcess):
    """The shared sandbox child (tests/support.py) with the bench's app, its CPU, and
    stats without the per-recipient table (10,000 entries are not a report)."""

    def __init__(self, latency: float, workdir: Path) -> None:
        super().__init__(workdir, latency=latency, appid=APPID, secret=SECRET)

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats.pop("by_openid", None)
        return stats


# --------------------------------------------------------------------------- databases


def _with_database(url: str, name: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


def _ensure_server_database(dialect: str, base_url: str, name: str) -> None:
    db = connect(base_url)
    try:
        with db.connection_context():
            if dialect == "postgres":
                exists = db.execute_sql("SELECT 1 FROM pg_database WHERE datname = %s",
                                        (name,)).fetchone()
                if not exists:
                    conn = db.connection()
                    conn.autocommit = True  # CREATE DATABASE refuses a transaction block
                    db.execute_sql(f'CREATE DATABASE "{name}"')
            else:
                db.execute_sql(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    finally:
        db.close()


def server_url(dialect: str) -> str:
    """The bench database on a server: HERALD_BENCH_<D>_URL, else herald_bench next to
    HERALD_TEST_<D>_URL (or the default server), created if missing."""
    upper = dialect.upper()
    explicit = os.environ.get(f"HERALD_BENCH_{upper}_URL")
    if explicit:
        return explicit
    base = os.environ.get(f"HERALD_TEST_{upper}_URL") or DEFAULT_SERVER_URLS[dialect]
    _ensure_server_database(dialect, base, BENCH_DB_NAME)
    return _with_database(base, BENCH_DB_NAME)


def server_reachable(dialect: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        server_url(dialect)
    except Exception as exc:  # noqa: BLE001 - any failure means "skip this dialect"
        return f"{type(exc).__name__}: {exc}"
    return None


def fresh_database(dialect: str, workdir: Path) -> tuple[str, Database]:
    """Empty Herald tables of `dialect`: a new SQLite file, or the server's tables
    dropped and recreated from db/ddl/<dialect>.sql."""
    if dialect == "sqlite":
        url = f"sqlite:///{workdir / 'herald.db'}"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{workdir / 'herald.db'}{suffix}").unlink(missing_ok=True)
        db = connect(url)
        init_schema(db)
        return url, db
    url = server_url(dialect)
    return url, support.fresh_db(url)


def make_config(db_url: str, api_base: str, workdir: Path, *, workers: int,
                batch_size: int, timeout: float = 10.0) -> Config:
    data = support.config_data(folder=workdir, api_base=api_base, appid=APPID, secret=SECRET,
                               database=db_url, http={"timeout": timeout},
                               dispatch={"workers": workers, "batch_size": batch_size})
    return config_from_dict(data, base_dir=workdir, env={})


def openid(i: int) -> str:
    # one recipient per row: Herald serialises sends to one openid (43108), and the
    # benchmark measures throughput, not that rule
    return f"oBench{i:010d}"


def fill(db: Database, n: int, *, start: int = 0, chunk: int = 500) -> float:
    """Insert n waiting rows, due now, created_at = the time its chunk went in, all in
    one transaction. Returns the seconds it took. Rows are made lazily, chunk by chunk,
    so a large fill does not hold them all in memory at once."""
    t0 = time.perf_counter()
    with db.atomic():
        for lo in range(start, start + n, chunk):
            now = datetime.now(UTC)
            hi = min(lo + chunk, start + n)
            MsgList.insert_many(
                [{"template": TEMPLATE, "openid": openid(i), "params": PARAMS,
                  "send_at": now, "created_at": now, "updated_at": now}
                 for i in range(lo, hi)]
            ).execute()
    return time.perf_counter() - t0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def latencies(db: Database) -> list[float]:
    """sent_at - created_at of every sent row, seconds, sorted."""
    q = (MsgList.select(MsgList.created_at, MsgList.sent_at)
         .where(MsgList.sent_at.is_null(False)).tuples())
    return sorted((s - c).total_seconds() for c, s in q.iterator())


def counts(db: Database) -> dict[str, int]:
    from peewee import fn

    q = MsgList.select(MsgList.status, fn.COUNT(MsgList.id)).group_by(MsgList.status).tuples()
    return dict(q)


@contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    if keep:
        yield Path(tempfile.mkdtemp(prefix="herald-bench-"))
        return
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as d:
        yield Path(d)


__all__ = ["APPID", "DIALECTS", "PARAMS", "ROOT", "SECRET", "TEMPLATE", "RssSampler",
           "SandboxChild", "SandboxProcess", "counts", "dialect_of", "fill", "fresh_database",
           "latencies", "machine", "make_config", "openid", "percentile", "proc_cpu", "self_cpu",
           "server_reachable", "server_url", "workdir"]
