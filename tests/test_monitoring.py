"""monitoring/: the Prometheus alert rules and the Grafana dashboard, held true three ways.

- promtool: `check config` on the example prometheus.yml (and through it alerts.yml),
  `check rules`, and `test rules` on alerts_test.yml, where every rule fires once and
  stays quiet once;
- their shape: every rule says how bad (severity) and what to do (summary, a
  description naming a herald verb); the dashboard is one Grafana 10/11 imports, on a
  datasource variable, with every panel on the grid;
- a real Prometheus (Debian's `prometheus`) scraping a real `herald run` (sending to the
  WeChat sandbox, some rows delivered, some failed, one app with wrong credentials) and a
  dead target, with `serve` receiving pushes: every dashboard query, every alert
  expression and every series selector inside them is evaluated through Prometheus's
  HTTP API and must return data, unless listed below as empty on purpose, with why.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from db.dialects import dialect
from sandbox.push_bodies import build_message, wrap_plain
from tests.support import (
    APPID,
    ROOT,
    SECRET,
    DaemonProcess,
    SandboxProcess,
    ServeProcess,
    config_data,
    fresh_db,
    wait_for,
)
from web.push_events import PushItem, PushMessage

MONITORING = ROOT / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "dashboard.json"
EXAMPLE_CONFIG = MONITORING / "prometheus.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
NEEDS_PROMTOOL = pytest.mark.skipif(
    PROMTOOL is None, reason="Debian's prometheus package (promtool) is not installed; "
                             ".ci/run installs it")

# Grafana's variables, as the live test fills them in: the scrape job, every daemon, and
# a rate window that holds several of the test's 1 s scrapes
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "herald", "$instance": ".*"}
# metrics Herald exports other than its own herald_*: the scrape's and the process's
OTHER_METRICS = r"up|ALERTS|process_[a-z_]+|python_[a-z_]+"
SELECTOR = re.compile(r"\b(herald_[a-z_]+|" + OTHER_METRICS + r")\b(\{[^{}]*\})?")

# ---- what the live scenario leaves empty, on purpose --------------------------------
# Alert expressions that must return nothing here (asserted empty): the scenario is
# healthy in these respects; alerts_test.yml shows each of them firing.
QUIET_ALERTS = {
    "HeraldDaemonAbsent": "the job is scraped: up{job=\"herald\"} exists",
    "HeraldDispatchStalled": "dispatch runs every 0.5 s and succeeds",
    "HeraldJobFailing": "no job fails here but token_refresh (its own alert)",
    "HeraldJobNotSucceeding": "events, stale_retry and purge run every few seconds",
    "HeraldQueueGrowing": "every due row goes out within a dispatch run: none waits 10 min",
    "HeraldBacklogOld": "every due row goes out within a dispatch run: none waits an hour",
    "HeraldGrantsHeld": "grants.on_missing is send: no row is held for a grant",
    "HeraldPushesNotApplied": "a few dozen pushes, applied within seconds (threshold 1000)",
    "HeraldDatabaseDown": "the SQLite file stays readable",
}
# Series selectors (inside the expressions) that match nothing here, on purpose.
QUIET_SELECTORS = {
    'herald_job_runs_total{outcome="error", exported_job!="token_refresh"}':
        "no job fails here but token_refresh",
}
PUSH_TOKEN = "monitorPushToken1"
TEMPLATE = "order_status"
PARAMS = '["Flat white", 28, "shipped", "thanks"]'


# ---- reading the files ----------------------------------------------------------------

def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> dict[str, str]:
    """'panel title / refId' -> PromQL with Grafana's variables filled in."""
    out = {}
    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            out[f"{panel['title']} / {target['refId']}"] = grafana_expr(target["expr"])
    return out


def grafana_expr(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def selectors(expr: str) -> list[str]:
    """The series selectors in a PromQL expression (metric name and its braces)."""
    return [m.group(0) for m in SELECTOR.finditer(expr)
            if m.group(1) not in ("up", "ALERTS") or m.group(2)]


# ---- promtool ---------------------------------------------------------------------------

def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


@NEEDS_PROMTOOL
def test_promtool_checks_the_rules_and_the_example_config() -> None:
    out = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert f"SUCCESS: {len(rules())} rules found" in out, out
    out = promtool("check", "config", str(EXAMPLE_CONFIG.relative_to(ROOT)))
    assert "SUCCESS" in out and str(RULES.name) in out, out


@NEEDS_PROMTOOL
def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert "SUCCESS" in out, out


def test_every_rule_fires_in_a_unit_test_and_stays_quiet_in_one() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fired == set(), "rules no unit test fires"
    assert names - quiet == set(), "rules no unit test shows quiet"
    assert (fired | quiet) - names == set(), "tests of rules that do not exist"


def test_every_rule_tells_on_call_what_to_do() -> None:
    import scheduler

    found = next(a for a in scheduler.parser()._actions if a.dest == "verb")
    verbs = set(found.choices or ())
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)), "two rules share a name"
    for rule in rules():
        name, notes = rule["alert"], rule.get("annotations", {})
        assert re.fullmatch(r"Herald[A-Z][A-Za-z]+", name), name
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), name
        assert notes.get("summary") and "\n" not in notes["summary"], name
        text = notes.get("description", "")
        assert "First:" in text, f"{name}: the first thing to look at"
        named = set(re.findall(r"`herald ([a-z-]+)", text))
        assert named, f"{name}: names no herald verb"
        assert named <= verbs, f"{name}: no such verb {named - verbs}"


def test_the_dashboard_imports_into_grafana_10_and_11() -> None:
    dash = dashboard()
    assert dash["schemaVersion"] >= 36 and dash["uid"] and dash["title"] == "Herald"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    ids: set[int] = set()
    taken: set[tuple[int, int]] = set()
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == source, var["name"]
    for panel in panels(dash):
        title = panel["title"]
        assert panel["id"] not in ids, f"{title}: id {panel['id']} twice"
        ids.add(panel["id"])
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, title
        cells = {(pos["y"] + dy, pos["x"] + dx) for dy in range(pos["h"]) for dx in range(pos["w"])}
        assert not cells & taken, f"{title} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        # the datasource variable, never a fixed uid: the dashboard imports anywhere
        assert panel["datasource"] == source, title
        assert panel["targets"], title
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), title
        for target in panel["targets"]:
            assert target["datasource"] == source, title
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables or f"${var}" in GRAFANA_VARIABLES, (title, var)
    assert "uid" not in json.dumps(dash).replace('"uid": "${datasource}"', "").replace(
        '"uid": "-- Grafana --"', "").replace('"uid": "herald"', "")


def test_dashboard_covers_each_topic() -> None:
    text = DASHBOARD.read_text()
    titles = {p["title"] for p in panels(dashboard())}
    for row in ("Throughput and outcomes", "Backlog", "Daemons", "Jobs",
                "Tokens and configuration"):
        assert row in titles
    for metric in ("herald_messages_finished_total", "herald_send_duration_seconds_bucket",
                   "herald_queue_rows", "herald_oldest_waiting_seconds", "herald_receipts",
                   "herald_rows_held_for_grant", "herald_quota_holds",
                   "herald_push_events_total", "herald_push_events_pending",
                   "herald_job_runs_total", "herald_job_duration_seconds_bucket",
                   "herald_job_last_success_timestamp_seconds", "herald_database_up",
                   "herald_token_expiry_seconds", "herald_template_reload_failures_total",
                   "herald_config_reloads_total", "herald_build_info", "up{"):
        assert metric in text, metric


# ---- the live scenario ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """Debian's prometheus as a child process, on the example config with 1 s intervals."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        assert PROMETHEUS is not None
        config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s",
                            "evaluation_interval": "1s"}
        config["rule_files"] = [str(MONITORING / f) for f in config["rule_files"]]
        [job] = config["scrape_configs"]
        job["static_configs"] = [{"targets": targets}]
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self._log: IO[str] = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc: subprocess.Popen[bytes] | None = None
        # a port taken by another process between free_port() and the bind: another
        if not any(self._start(path, workdir / "tsdb") for _ in range(3)):
            self.stop()
            raise RuntimeError(f"prometheus did not start:\n{self.tail()}")

    def _start(self, config: Path, storage: Path) -> bool:
        assert PROMETHEUS is not None
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        proc = self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={storage}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: proc.poll() is not None or self.ready(), 60, 0.1)
        if proc.poll() is None and self.ready():
            return True
        proc.kill()
        proc.wait()
        return False

    def ready(self) -> bool:
        try:
            return requests.get(self.url + "/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def api(self, path: str, **params: str) -> Any:
        resp = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = resp.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[Any]:
        """The instant query's series (a scalar counts as one)."""
        data = self.api("query", query=expr)
        return [data["result"]] if data["resultType"] == "scalar" else data["result"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def until(what: str, predicate: Callable[[], object], timeout: float = 60.0,
          logs: Callable[[], str] = lambda: "") -> None:
    if not wait_for(predicate, timeout, 0.2):
        raise AssertionError(f"not within {timeout:.0f} s: {what}\n{logs()}")


def insert(db: Any, **cols: Any) -> int:
    """One msg_list row with plain SQL, as an application writes it."""
    values = [dialect(db).ts(v.replace(microsecond=0)) if isinstance(v, datetime) else v
              for v in cols.values()]
    sql = (f"INSERT INTO msg_list ({', '.join(cols)}) "
           f"VALUES ({', '.join(['?'] * len(cols))})")
    return int(db.execute_sql(sql, values).lastrowid)


def column(db: Any, row_id: int, name: str) -> Any:
    return db.execute_sql(f"SELECT {name} FROM msg_list WHERE id = ?", (row_id,)).fetchone()[0]


def signed_push(openid: str, timestamp: int, nonce: str,
                msgid: str) -> tuple[dict[str, str], bytes]:
    """A plaintext-mode receipt push signed with the app's Token, as WeChat sends one."""
    msg = PushMessage(to_user="gh_monitoring", from_user=openid, create_time=timestamp,
                      msg_type="event", event="subscribe_msg_sent_event",
                      items=(PushItem.receipt("zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc",
                                              msgid),))
    return wrap_plain(PUSH_TOKEN, build_message(msg, "xml"), timestamp, nonce)


class Scenario:
    """The sandbox, `run` (metrics on), `serve` (push receiver) and the moves the test
    makes on them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.url = f"sqlite:///{tmp / 'herald.db'}"
        self.db = fresh_db(self.url)
        self.sandbox = SandboxProcess(tmp)
        self.templates = tmp / "templates.yaml"
        shutil.copy(ROOT / "templates.yaml", self.templates)
        self.config = tmp / "config.yaml"
        self.data = config_data(
            folder=tmp, api_base=self.sandbox.url, templates=str(self.templates),
            apps={"default": {"appid": APPID, "secret": SECRET, "push": {"token": PUSH_TOKEN}},
                  # an appid the sandbox does not know: its token fetch fails (40013)
                  "broken": {"appid": "wxbroken00000001", "secret": "not-the-secret-01"}},
            metrics={"listen": "127.0.0.1:0"}, web={"listen": "127.0.0.1:0"},
            console={"listen": None}, dispatch={"workers": 4},
            jobs={"dispatch": {"every": 0.5}, "token_refresh": {"every": 2},
                  "stale_retry": {"every": 2}, "purge": {"every": 2}, "events": {"every": 1}},
            retry={"backoff": {"base": "1s", "max": "2s", "jitter": 0}})
        self.config.write_text(yaml.safe_dump(self.data, allow_unicode=True))
        self.daemon = DaemonProcess(self.config, tmp / "daemon.log", "daemon")
        self.serve = ServeProcess(self.config, tmp / "serve.log", "serve")
        self.push_url = ""
        self.metrics_port = 0

    def start(self) -> None:
        self.daemon.start()
        self.serve.start()
        self.daemon.wait_ready()
        self.serve.wait_ready()
        found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.daemon.text())
        assert found, self.daemon.tail()
        self.metrics_port = int(found.group(1))
        self.push_url = self.serve.urls()["push"] + "/wechat/push"
        # the sandbox pushes a receipt to serve after each send it accepts, like WeChat
        self.sandbox.call("POST", "push_config",
                          {"appid": APPID, "url": self.push_url, "token": PUSH_TOKEN})

    def logs(self) -> str:
        return (f"--- daemon\n{self.daemon.tail()}\n--- serve\n{self.serve.tail()}")

    def wave(self, n: int) -> list[int]:
        """Rows the daemon sends: three delivered, one refused by its user (43101, fail),
        one that WeChat answers -1 first (wait, then success). Waits until all settled."""
        self.sandbox.call("POST", "inject", {"fault": 43101, "openid": "o_refuses"})
        self.sandbox.call("POST", "inject", {"fault": -1, "openid": "o_flaky"})
        ids = [insert(self.db, template=TEMPLATE, openid=who, params=PARAMS)
               for who in (f"o_user{n}a", f"o_user{n}b", f"o_user{n}c", "o_refuses", "o_flaky")]
        until(f"wave {n} settled",
              lambda: all(column(self.db, i, "status") in ("success", "fail") for i in ids),
              logs=self.logs)
        assert [column(self.db, i, "status") for i in ids] == \
            ["success", "success", "success", "fail", "success"]
        return ids

    def seed_missing_receipts(self, rows: int) -> None:
        """Rows sent 40 minutes ago whose receipt never came (receipts.missing_after: 30m)."""
        sent = datetime.now(UTC) - timedelta(minutes=40)
        for i in range(rows):
            insert(self.db, template=TEMPLATE, openid=f"o_old{i}", params=PARAMS,
                   status="success", attempts=1, send_at=sent, created_at=sent,
                   updated_at=sent, sent_at=sent, msgid=str(9000 + i))

    def pushes(self, refused: int, burst: int) -> None:
        """`refused` pushes with a wrong signature, then one stale (signed an hour ago)
        and a forged pair (one timestamp and nonce, two bodies)."""
        for i in range(refused):
            resp = requests.post(self.push_url, params={"signature": "0" * 40,
                                 "timestamp": str(int(time.time())), "nonce": f"bad{burst}{i}"},
                                 data=b"<xml><MsgType>event</MsgType></xml>", timeout=10)
            assert resp.status_code == 403, resp.text
        now = int(time.time())
        query, body = signed_push(f"o_stale{burst}", now - 3600, f"stale{burst}", f"7{burst}01")
        requests.post(self.push_url, params=query, data=body, timeout=10)
        for k in (1, 2):
            query, body = signed_push(f"o_forged{burst}", now, f"forged{burst}", f"7{burst}1{k}")
            requests.post(self.push_url, params=query, data=body, timeout=10)

    def hup(self) -> None:
        """SIGHUP; returns once the daemon has logged its reload."""
        before = self.daemon.text().lower().count("reload")
        assert self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGHUP)
        until("the daemon's reload", lambda: self.daemon.text().lower().count("reload") > before,
              logs=self.logs)

    def stop(self) -> None:
        for proc in (self.serve, self.daemon):
            if proc.proc is not None:
                proc.stop()
            proc.close()
        self.sandbox.stop()
        self.db.close()


def has_data(prom: Prometheus, expr: str) -> int:
    return len(prom.query(expr))


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus package is not "
                                                "installed; .ci/run installs it")
def test_a_real_prometheus_scraping_a_daemon(tmp_path: Path) -> None:
    started = time.monotonic()
    scenario = Scenario(tmp_path)
    # a target that refuses connections, for the down-daemon alert: bound, never listening
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    prom: Prometheus | None = None
    try:
        scenario.seed_missing_receipts(5)
        scenario.start()
        scenario.pushes(refused=3, burst=1)
        scenario.wave(1)

        daemon_target = f"127.0.0.1:{scenario.metrics_port}"
        dead_target = f"127.0.0.1:{dead.getsockname()[1]}"
        prom = Prometheus(tmp_path, [daemon_target, dead_target])
        p = prom

        def logs() -> str:
            return f"{scenario.logs()}\n--- prometheus\n{p.tail()}"

        until("the first scrapes", lambda: has_data(p, f'up{{instance="{daemon_target}"}} == 1')
              and has_data(p, f'up{{instance="{dead_target}"}} == 0')
              and has_data(p, 'herald_messages_finished_total{status="fail"}'), logs=logs)

        # counters must move after Prometheus first saw them for rate() and increase()
        scenario.templates.write_text("order_status: [this is not a template\n")
        until("the refused templates.yaml in a scrape",
              lambda: has_data(p, "herald_template_reload_failures_total > 0"), logs=logs)
        scenario.data["dispatch"]["workers"] = 3  # a setting that needs a restart
        scenario.config.write_text(yaml.safe_dump(scenario.data, allow_unicode=True))
        scenario.hup()
        seen = time.time()
        until("a scrape after the first reload", lambda: float(p.query(
            f'timestamp(herald_build_info{{instance="{daemon_target}"}})')[0]["value"][1])
            > seen + 1, logs=logs)
        scenario.hup()
        scenario.wave(2)
        # WeChat's daily quota spent: last, as it holds the app's later sends
        scenario.sandbox.call("POST", "inject", {"fault": 45009, "openid": "o_quota"})
        quota = insert(scenario.db, template=TEMPLATE, openid="o_quota", params=PARAMS)
        until("the 45009 answer", lambda: column(scenario.db, quota, "errcode") == 45009,
              logs=logs)
        # serve reports its push counts in its heartbeat (every 15 s): a second burst after
        # Prometheus saw the first makes the refused counter move
        until("serve's first push counts in a scrape",
              lambda: has_data(p, 'herald_push_events_total{result=~"refused:.*"}'),
              timeout=45, logs=logs)
        scenario.pushes(refused=15, burst=2)

        alerts = {rule["alert"]: rule["expr"] for rule in rules()}
        queries = dashboard_queries()
        expect = {**alerts, **queries}
        for expr in list(alerts.values()) + list(queries.values()):
            for sel in selectors(expr):
                expect.setdefault(sel, sel)
        # every other alert, panel and selector must return data: quota holds, refused
        # reloads and forged/stale pushes included (the scenario provokes each)
        must = {k: e for k, e in expect.items() if k not in QUIET_ALERTS
                and k not in QUIET_SELECTORS}
        missing: dict[str, str] = {}

        def all_have_data() -> bool:
            missing.clear()
            missing.update({k: e for k, e in must.items() if not has_data(p, e)})
            return not missing

        if not wait_for(all_have_data, 60, 1.0):
            raise AssertionError("no data for:\n" + "\n".join(
                f"  {k}: {e}" for k, e in missing.items()) + "\n" + logs())

        counts = {k: has_data(p, e) for k, e in expect.items()}
        lines = [f"{counts[k]:>4}  {k if k == e else k + ': ' + e}" for k, e in expect.items()]
        print("\nseries  query (live Prometheus)\n" + "\n".join(lines))

        loud = {k: counts[k] for k in (*QUIET_ALERTS, *QUIET_SELECTORS) if counts.get(k)}
        assert not loud, f"expected empty in this scenario, returned data: {loud}"
        assert set(QUIET_ALERTS) <= set(alerts)
        assert set(QUIET_SELECTORS) <= set(expect)

        # Prometheus loaded every rule and evaluates it without error; each alert whose
        # expression has data is pending or firing
        loaded = {r["name"]: r for g in p.api("rules")["groups"] for r in g["rules"]}
        assert set(loaded) == set(alerts)
        assert {n: r["lastError"] for n, r in loaded.items() if r["health"] != "ok"} == {}
        # (the rule is evaluated every second, apart from the query above: wait for it)
        with_data = {n for n in alerts if counts[n]}
        active: set[str] = set()

        def all_active() -> bool:
            active.clear()
            active.update(a["labels"]["alertname"] for a in p.api("alerts")["alerts"])
            return with_data <= active

        assert wait_for(all_active, 15, 0.5), f"not pending or firing: {with_data - active}"

        # Grafana's variable queries find the job and the daemon
        assert "herald" in p.api("label/job/values", **{"match[]": "herald_build_info"})
        assert daemon_target in p.api("label/instance/values",
                                      **{"match[]": 'herald_build_info{job=~"herald"}'})

        # every metric the daemon exports is on the dashboard or in a rule
        scraped = requests.get(f"http://{daemon_target}/metrics", timeout=10).text
        watched = RULES.read_text() + DASHBOARD.read_text()
        names = {f.name for f in text_string_to_metric_families(scraped)}
        unwatched = {n for n in names if n.startswith("herald_") and n not in watched}
        assert unwatched == set()
        print(f"wall time {time.monotonic() - started:.1f} s")
    finally:
        if prom is not None:
            prom.stop()
        scenario.stop()
        dead.close()
