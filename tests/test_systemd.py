"""systemd/: the unit passes systemd-analyze (verify and security), the example config loads.

`systemd-analyze verify` checks that ExecStart's program exists on this machine, so
it runs on a copy whose ExecStart and WorkingDirectory point at this checkout and its
interpreter; everything else is the shipped file. A second test proves the same check
fails broken units, so a clean result means something.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config import ConfigError, load_config
from config.credentials import MISSING_MARKER
from web.server import serve_credentials

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "herald.service"
WEB_UNIT = ROOT / "systemd" / "herald-web.service"
EXAMPLE = ROOT / "systemd" / "config.example.yaml"
PROD_EXEC = "ExecStart=/opt/herald/.venv/bin/herald run"
WEB_EXEC = "ExecStart=/opt/herald/.venv/bin/herald serve"
# the venv's console script beside the interpreter running the tests (make builds it)
HERALD = Path(sys.executable).parent / "herald"
UNITS = {"run": (UNIT, PROD_EXEC), "serve": (WEB_UNIT, WEB_EXEC)}
MAX_EXPOSURE = 1.5
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (Debian: apt-get install systemd)")


def settings(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given (units repeat keys: After=, SystemCallFilter=)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def local_copy(directory: Path, text: str | None = None, verb: str = "run") -> Path:
    """The unit with ExecStart/WorkingDirectory pointed at this checkout."""
    unit, exec_line = UNITS[verb]
    text = unit.read_text(encoding="utf-8") if text is None else text
    assert text.count(exec_line) == 1, "the production ExecStart line changed: update the test"
    text = text.replace(exec_line, f"ExecStart={HERALD} {verb}")
    text = re.sub(r"(?m)^WorkingDirectory=.*$", f"WorkingDirectory={ROOT}", text)
    path = directory / unit.name  # the name matters: it is how systemd sees it
    path.write_text(text, encoding="utf-8")
    return path


def verify_problems(path: Path) -> list[str]:
    """What `systemd-analyze verify` objects to in this unit; [] when it is clean.

    --man=no: Documentation= may point at pages this machine lacks. --recursive-errors=no:
    judge this unit, not units it names (network-online.target may be absent in a
    container). A non-zero exit status counts even when nothing was printed.
    """
    assert ANALYZE is not None  # the module is skipped without it
    proc = subprocess.run(
        [ANALYZE, "verify", "--man=no", "--recursive-errors=no", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_COLOR": "0",
             "LANG": "C.UTF-8"},
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    problems = [line for line in lines if path.name in line]
    if proc.returncode != 0 and not problems:
        problems = [f"exit status {proc.returncode}: {' / '.join(lines) or '(no output)'}"]
    return problems


def exposure(path: Path) -> float:
    assert ANALYZE is not None  # the module is skipped without it
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_COLOR": "0",
             "LANG": "C.UTF-8"},
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, f"no exposure level in:\n{proc.stdout}\n{proc.stderr}"
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("verb", list(UNITS))
def test_unit_verifies_clean(tmp_path: Path, verb: str) -> None:
    assert verify_problems(local_copy(tmp_path, verb=verb)) == []


@needs_analyze
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Restart=on-failure", "Restart=sometimes"),
        ("Type=notify", "Type=notify-reload"),  # systemd 253+, not Debian 12's 252
        ("ProtectSystem=strict", "ProtectSytem=strict"),  # a typo is ignored by systemd
        ("WatchdogSec=60", "WatchdogSec=a minute"),
        ("[Install]", "[Instal]"),
        (f"ExecStart={HERALD}", "ExecStart=/nonexistent/bin/herald"),
    ],
)
def test_broken_units_fail_the_same_check(tmp_path: Path, old: str, new: str) -> None:
    path = local_copy(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert re.search(rf"(?m)^{re.escape(old)}", text), old
    path.write_text(re.sub(rf"(?m)^{re.escape(old)}", lambda _: new, text, count=1),
                    encoding="utf-8")
    assert verify_problems(path) != []


@needs_analyze
@pytest.mark.parametrize("verb", list(UNITS))
def test_exposure_is_low(tmp_path: Path, verb: str) -> None:
    score = exposure(UNITS[verb][0])
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}: a hardening line went"


@needs_analyze
def test_exposure_check_catches_an_unhardened_unit(tmp_path: Path) -> None:
    """The parser and the bound are real: the same unit without hardening fails them."""
    keep = ("[", "Description", "Type", "ExecStart", "ExecReload", "Restart", "WatchdogSec")
    lines = [line for line in UNIT.read_text(encoding="utf-8").splitlines()
             if line.startswith(keep)]
    path = tmp_path / "herald.service"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert exposure(path) > MAX_EXPOSURE


def test_unit_has_the_required_settings() -> None:
    s = settings(UNIT.read_text(encoding="utf-8"))
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [PROD_EXEC.removeprefix("ExecStart=")]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["DynamicUser"] == ["yes"]
    assert s["StateDirectory"] == ["herald"]
    assert s["ConfigurationDirectory"] == ["herald"]
    assert s["WorkingDirectory"] == ["/opt/herald"]
    assert "HERALD_CONFIG=/etc/herald/config.yaml" in s["Environment"]
    assert s["LoadCredential"] == ["wechat_secret:/etc/herald/wechat_secret"]
    assert int(s["WatchdogSec"][0]) >= 30
    families = s["RestrictAddressFamilies"][0].split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)


def test_web_unit_holds_no_app_secret_and_shares_the_queue() -> None:
    web, run = (settings(u.read_text(encoding="utf-8")) for u in (WEB_UNIT, UNIT))
    assert web["ExecStart"] == [WEB_EXEC.removeprefix("ExecStart=")]
    assert web["Type"] == ["notify"] and web["Restart"] == ["on-failure"]
    creds = web["LoadCredential"]
    assert creds == ["push_token:/etc/herald/push_token",
                     "push_aes_key:/etc/herald/push_aes_key"]
    assert not any("wechat_secret" in c for c in creds)
    # each push file is optional: a SetCredential= of the same name is systemd's fallback
    # when the file is missing, so a console-only set-up starts (systemd.exec(5))
    assert web["SetCredential"] == [f"{c.split(':')[0]}:{MISSING_MARKER}" for c in creds]
    # one dynamic user for both units: both open the SQLite queue in one state directory
    assert web["User"] == run["User"] == ["herald"]
    assert web["StateDirectory"] == run["StateDirectory"] == ["herald"]
    assert web["DynamicUser"] == ["yes"]


def test_stop_timeout_covers_an_in_flight_send(tmp_path: Path) -> None:
    cfg = _load_example(tmp_path)
    stop = int(settings(UNIT.read_text(encoding="utf-8"))["TimeoutStopSec"][0])
    # a send may take http.timeout, then the results are written (busy wait up to 10 s)
    assert stop >= cfg.http.timeout + 10 + 5


def _load_example(tmp_path: Path, *, secret: str | None = "s3cret-from-credential"):
    etc = tmp_path / "etc" / "herald"
    etc.mkdir(parents=True)
    shutil.copy(EXAMPLE, etc / "config.yaml")
    creds = tmp_path / "credentials"
    creds.mkdir()
    if secret is not None:
        (creds / "wechat_secret").write_text(secret + "\n", encoding="utf-8")
    env = {"WECHAT_APPID": "wx1234567890abcdef", "CREDENTIALS_DIRECTORY": str(creds),
           "HERALD_CONFIG": str(etc / "config.yaml")}
    return load_config(None, env=env)


def test_example_config_validates_for_the_unit(tmp_path: Path) -> None:
    cfg = _load_example(tmp_path)
    assert cfg.database == f"sqlite:///{Path('/var/lib/herald/herald.db').resolve()}"
    assert cfg.apps["default"].secret is not None
    assert cfg.apps["default"].secret.reveal() == "s3cret-from-credential"
    assert cfg.templates == (tmp_path / "etc" / "herald" / "templates.yaml").resolve()
    assert cfg.log.format == "json"
    assert (cfg.metrics.host, cfg.metrics.port) == ("127.0.0.1", 9464)


def test_example_database_lives_in_the_units_state_directory() -> None:
    state = settings(UNIT.read_text(encoding="utf-8"))["StateDirectory"][0]
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert raw["database"] == f"sqlite:////var/lib/{state}/herald.db"
    assert raw["apps"]["default"]["secret_file"] == "wechat_secret"
    assert "secret" not in raw["apps"]["default"]  # never inline in a 0644 file


def test_example_config_needs_the_credential(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="secret_file"):
        _load_example(tmp_path, secret=None)


def _web_config(tmp_path: Path, push: bool) -> Path:
    """/etc/herald/config.yaml for herald-web, and the credentials directory systemd
    makes when neither push file exists: the SetCredential= placeholders."""
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["templates"] = str(ROOT / "templates.yaml")
    if push:
        data["apps"]["default"]["push"] = {"token_file": "push_token",
                                           "aes_key_file": "push_aes_key"}
    (etc / "config.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    creds = tmp_path / "credentials"
    creds.mkdir(exist_ok=True)
    for c in settings(WEB_UNIT.read_text(encoding="utf-8"))["SetCredential"]:
        name, _, value = c.partition(":")
        (creds / name).write_text(value, encoding="utf-8")
    return etc / "config.yaml"


def test_a_console_only_web_unit_starts_without_push_files(tmp_path: Path) -> None:
    """No apps.<name>.push: serve's configuration loads with only the placeholders."""
    path = _web_config(tmp_path, push=False)
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "credentials"),
           "WECHAT_APPID": "wx1234567890abcdef"}
    cfg = load_config(path, env=env, strict_secrets=False)
    assert cfg.apps["default"].push is None
    assert serve_credentials(cfg) == []  # serve asks for nothing (only the AppSecret,
    assert list(cfg.unresolved) == ["apps.default.secret_file"]  # which it never reads)


def test_a_push_set_up_without_its_files_says_they_are_missing(tmp_path: Path) -> None:
    """push named but its file absent: the placeholder is refused, naming the credential
    and the missing file, never read as a Token."""
    path = _web_config(tmp_path, push=True)
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "credentials"),
           "WECHAT_APPID": "wx1234567890abcdef"}
    cfg = load_config(path, env=env, strict_secrets=False)  # as serve loads it
    with pytest.raises(ConfigError) as err:
        cfg.require(*serve_credentials(cfg))
    text = str(err.value)
    for name in ("push_token", "push_aes_key"):
        assert f"'{name}' is missing: systemd found no file for the credential {name}" in text
