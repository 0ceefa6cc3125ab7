"""`herald demo` as a newcomer runs it: a real subprocess in a scratch folder, every row
settled with the outcome the demo promises, its queue left for the operator verbs, and
a folder it did not make refused rather than emptied."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, clean_env

pytestmark = pytest.mark.slow


def herald(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scheduler.py"), *args], cwd=cwd,
                          env=clean_env(), capture_output=True, text=True, timeout=120)


def test_demo_tells_the_whole_story_and_leaves_its_queue(tmp_path: Path) -> None:
    folder = tmp_path / "demo-run"
    run = herald("demo", "--dir", str(folder))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    expected = {  # label -> (status, receipt) the demo promises
        "positional params": ("success", "delivered"),
        "scheduled 2 s ahead (ISO 8601)": ("success", "delivered"),
        "WeChat busy once (-1), retried": ("success", "delivered"),
        "accepted, receipt says not shown": ("success", "failed"),
        "grants used up: held, then sent": ("success", "delivered"),
        "no grant (43101): fallback chain": ("fail", "-"),
        "malformed amount": ("fail", "-"),
        "expired before sending": ("fail", "-"),
        "update 1 of 3 (collapse_key)": ("cancelled", "-"),
        "update 2 of 3 (collapse_key)": ("cancelled", "-"),
        "update 3 of 3: the one sent": ("success", "delivered"),
        "outside its send window: waits": ("wait", "-"),
    }
    for label, (status, receipt) in expected.items():
        line = next(li for li in out.splitlines() if label in li)
        assert f" {status} " in line and f" {receipt} " in line, line
    assert "fell back to row" in out
    assert "order_status_oa: fail: 43004" in out
    assert "order_status_sms: success: delivered, SerialNo" in out and "receipt delivered" in out
    assert "held row released by a pushed accept: yes" in out
    assert "order:1001: 3 updates -> 1 message" in out and out.count("superseded by #19") == 4
    assert "held: send window" in out
    assert "o_mallory" in out and "balance 1" in out  # the application's reported grant
    # the operator verbs work on the queue it left, without credentials in the environment
    cfg = str(folder / "config.yaml")
    report_run = herald("--config", cfg, "status", "--json")
    assert report_run.returncode == 0, report_run.stderr
    report = json.loads(report_run.stdout)
    assert report["counts"]["success"] == 11 and report["counts"]["wait"] == 1
    assert report["open"]["held_window"] == 1 and report["superseded"] == 2
    assert report["receipts"]["delivered"] == 10 and report["receipts"]["failed"] == 1
    shown = herald("--config", cfg, "show", "10")
    assert "fallback chain" in shown.stdout and "order_status_sms (success)" in shown.stdout
    # run twice: the demo empties the folder it made and starts again
    assert herald("demo", "--dir", str(folder)).returncode == 0


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "work"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    run = herald("demo", "--dir", str(precious))
    assert run.returncode != 0
    assert "was not made by the demo" in run.stdout + run.stderr
    assert (precious / "notes.txt").read_text() == "keep me"
    # the checkout itself: `--dir .` must not empty it
    run = herald("demo", "--dir", ".", cwd=ROOT)
    assert run.returncode != 0 and (ROOT / "scheduler.py").exists()
