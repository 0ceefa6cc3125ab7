"""The WeChat sandbox, tested over real HTTP on 127.0.0.1, the way Herald's client sees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.wechat import DEFAULT_APPID, DEFAULT_SECRET, FIRST_MSGID, Attempt, Sandbox

PROJECT_ROOT = Path(__file__).resolve().parent.parent

TEMPLATES = {
    "TPL_ORDER": ["thing1", "character_string2", "time3"],
    "TPL_NOTE": ["thing1"],
}
PAGES = {"pages/order/detail", "pages/index/index"}
SEND = "/cgi-bin/message/subscribe/send"


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[Sandbox]:
    with Sandbox(templates=TEMPLATES, pages=PAGES, clock=clock) as sb:
        yield sb


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    # A proxy from the environment must not intercept loopback traffic.
    session.trust_env = False
    yield session
    session.close()


def stable_token(
    http: requests.Session,
    sb: Sandbox,
    *,
    force: bool = False,
    appid: str = DEFAULT_APPID,
    secret: str = DEFAULT_SECRET,
    grant_type: str = "client_credential",
) -> dict[str, Any]:
    body = {"grant_type": grant_type, "appid": appid, "secret": secret, "force_refresh": force}
    response = http.post(f"{sb.url}/cgi-bin/stable_token", json=body, timeout=5)
    assert response.status_code == 200
    return response.json()


def legacy_token(http: requests.Session, sb: Sandbox, **params: str) -> dict[str, Any]:
    query = {"grant_type": "client_credential", "appid": DEFAULT_APPID, "secret": DEFAULT_SECRET}
    query.update(params)
    response = http.get(f"{sb.url}/cgi-bin/token", params=query, timeout=5)
    assert response.status_code == 200
    return response.json()


def message(touser: str = "o-user-1", **overrides: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "touser": touser,
        "template_id": "TPL_ORDER",
        "page": "pages/order/detail?id=42",
        "data": {
            "thing1": {"value": "Your order shipped"},
            "character_string2": {"value": "SO-2026-0042"},
            "time3": {"value": "10:30"},
        },
        "miniprogram_state": "formal",
        "lang": "zh_CN",
    }
    msg.update(overrides)
    return msg


def send(
    http: requests.Session, sb: Sandbox, token: str | None, msg: Any, **kwargs: Any
) -> requests.Response:
    params = {"access_token": token} if token is not None else {}
    kwargs.setdefault("timeout", 5)
    if isinstance(msg, bytes | str):
        return http.post(f"{sb.url}{SEND}", params=params, data=msg, **kwargs)
    return http.post(f"{sb.url}{SEND}", params=params, json=msg, **kwargs)


@pytest.fixture
def token(http: requests.Session, sandbox: Sandbox) -> str:
    return stable_token(http, sandbox)["access_token"]


def errcode_of(response: requests.Response) -> int:
    assert response.status_code == 200
    return response.json()["errcode"]


# --- tokens ----------------------------------------------------------------------------


def test_stable_token_is_reused_with_remaining_lifetime(http, sandbox, clock):
    first = stable_token(http, sandbox)
    assert first["expires_in"] == 7200
    clock.advance(1000)
    second = stable_token(http, sandbox)
    assert second["access_token"] == first["access_token"]
    assert second["expires_in"] == 6200


def test_stable_token_renewed_when_nearly_expired_old_still_valid(http, sandbox, clock):
    old = stable_token(http, sandbox)["access_token"]
    clock.advance(7200 - 299)
    fresh = stable_token(http, sandbox)
    assert fresh["access_token"] != old
    assert fresh["expires_in"] == 7200
    assert errcode_of(send(http, sandbox, old, message())) == 0
    clock.advance(300)
    assert errcode_of(send(http, sandbox, old, message())) == 42001
    assert errcode_of(send(http, sandbox, fresh["access_token"], message())) == 0


def test_force_refresh_invalidates_old_token_at_once(http, sandbox):
    old = stable_token(http, sandbox)["access_token"]
    new = stable_token(http, sandbox, force=True)["access_token"]
    assert new != old
    response = send(http, sandbox, old, message())
    assert response.json() == {
        "errcode": 40001,
        "errmsg": "invalid credential, access_token is invalid or not latest",
    }
    assert errcode_of(send(http, sandbox, new, message())) == 0
    assert stable_token(http, sandbox)["access_token"] == new


@pytest.mark.parametrize(
    ("kwargs", "errcode"),
    [
        ({"grant_type": "password"}, 40002),
        ({"appid": "wxnosuchapp"}, 40013),
        ({"secret": "wrong"}, 40125),
    ],
)
def test_stable_token_rejects_bad_credentials(http, sandbox, kwargs, errcode):
    answer = stable_token(http, sandbox, **kwargs)
    assert answer["errcode"] == errcode
    assert "access_token" not in answer


def test_stable_token_rejects_non_json(http, sandbox):
    response = http.post(f"{sandbox.url}/cgi-bin/stable_token", data=b"nope", timeout=5)
    assert response.json()["errcode"] == 47001


def test_legacy_token_rotates_with_grace(http, sandbox, clock):
    first = legacy_token(http, sandbox)
    assert first["expires_in"] == 7200
    second = legacy_token(http, sandbox)["access_token"]
    assert second != first["access_token"]
    clock.advance(299)
    assert errcode_of(send(http, sandbox, first["access_token"], message())) == 0
    clock.advance(2)
    assert errcode_of(send(http, sandbox, first["access_token"], message())) == 40001
    assert errcode_of(send(http, sandbox, second, message())) == 0


@pytest.mark.parametrize(
    ("params", "errcode"),
    [({"grant_type": "x"}, 40002), ({"appid": "wxnope"}, 40013), ({"secret": "no"}, 40125)],
)
def test_legacy_token_rejects_bad_credentials(http, sandbox, params, errcode):
    assert legacy_token(http, sandbox, **params)["errcode"] == errcode


def test_stable_and_legacy_tokens_are_independent(http, sandbox, clock):
    stable = stable_token(http, sandbox)["access_token"]
    legacy = legacy_token(http, sandbox)["access_token"]
    legacy_token(http, sandbox)
    stable_token(http, sandbox, force=True)
    clock.advance(100)
    # The force refresh killed only the stable token; the legacy one is in its grace.
    assert errcode_of(send(http, sandbox, stable, message())) == 40001
    assert errcode_of(send(http, sandbox, legacy, message())) == 0
    assert sandbox.token_calls == {"stable": 2, "legacy": 2}


def test_token_expires_after_ttl(http, sandbox, clock, token):
    clock.advance(7199)
    assert errcode_of(send(http, sandbox, token, message())) == 0
    clock.advance(1)
    response = send(http, sandbox, token, message())
    assert response.json() == {"errcode": 42001, "errmsg": "access_token expired"}


@pytest.mark.parametrize("bad", [None, "", "made-up-token"])
def test_missing_or_unknown_token_is_40001(http, sandbox, bad):
    assert errcode_of(send(http, sandbox, bad, message())) == 40001


def test_expire_tokens_then_stable_token_mints_fresh(http, sandbox, token):
    sandbox.expire_tokens()
    assert errcode_of(send(http, sandbox, token, message())) == 42001
    fresh = stable_token(http, sandbox)["access_token"]
    assert fresh != token
    assert errcode_of(send(http, sandbox, fresh, message())) == 0


def test_expire_tokens_after_n_accepted(http, sandbox, token):
    sandbox.expire_tokens_after(2)
    codes = [errcode_of(send(http, sandbox, token, message(f"o-{i}"))) for i in range(3)]
    assert codes == [0, 0, 42001]
    assert sandbox.accepted_count() == 2


# --- sending ---------------------------------------------------------------------------


def test_success_returns_exact_msgid_above_2_53(http, sandbox, token):
    first = send(http, sandbox, token, message())
    second = send(http, sandbox, token, message("o-user-2"))
    body = first.json()
    assert body["errcode"] == 0 and body["errmsg"] == "ok"
    msgid = body["msgid"]
    assert isinstance(msgid, int) and msgid > 2**53
    assert msgid == FIRST_MSGID
    assert f'"msgid":{msgid}' in first.text.replace(" ", "")
    assert second.json()["msgid"] == msgid + 1
    assert first.headers["Content-Type"] == "application/json"
    assert int(first.headers["Content-Length"]) == len(first.content)


def test_accepted_record_content_has_no_token(http, sandbox, token):
    msg = message()
    msgid = send(http, sandbox, token, msg).json()["msgid"]
    [record] = sandbox.accepted
    assert record == {
        "touser": "o-user-1",
        "template_id": "TPL_ORDER",
        "page": "pages/order/detail?id=42",
        "data": msg["data"],
        "miniprogram_state": "formal",
        "lang": "zh_CN",
        "msgid": str(msgid),
    }
    assert token not in repr(sandbox.accepted) + repr(sandbox.attempts)
    # A copy: changing it does not change the sandbox's record.
    record["data"]["thing1"]["value"] = "changed"
    assert sandbox.accepted[0]["data"]["thing1"]["value"] == "Your order shipped"
    assert sandbox.accepted_count("o-user-1") == 1
    assert sandbox.accepted_count("o-nobody") == 0
    [attempt] = sandbox.attempts
    assert attempt.touser == "o-user-1" and attempt.errcode == 0 and attempt.fault is None


def _data(**values: str) -> dict[str, dict[str, str]]:
    return {key: {"value": value} for key, value in values.items()}


GOOD_DATA = {"thing1": "ok", "character_string2": "A1", "time3": "10:30"}


@pytest.mark.parametrize(
    ("overrides", "errcode", "errmsg"),
    [
        ({"touser": ""}, 40003, "invalid openid"),
        ({"touser": None}, 40003, "invalid openid"),
        ({"template_id": "TPL_UNKNOWN"}, 40037, "invalid template_id"),
        ({"page": "pages/secret/admin"}, 41030, "invalid page"),
        ({"miniprogram_state": "beta"}, 47003, "argument invalid! miniprogram_state invalid"),
        ({"lang": "fr_FR"}, 47003, "argument invalid! lang invalid"),
        ({"data": "thing1=ok"}, 47003, "argument invalid! data invalid"),
        (
            {"data": _data(thing1="ok", time3="10:30")},
            47003,
            "argument invalid! data.character_string2.value invalid",
        ),
        (
            {"data": _data(**GOOD_DATA, thing4="extra")},
            47003,
            "argument invalid! data.thing4.value invalid",
        ),
        (
            {"data": _data(**{**GOOD_DATA, "thing1": "x" * 21})},
            47003,
            "argument invalid! data.thing1.value invalid",
        ),
        (
            {"data": _data(**{**GOOD_DATA, "time3": "25:00"})},
            47003,
            "argument invalid! data.time3.value invalid",
        ),
        (
            {"data": {**_data(thing1="ok", time3="10:30"), "character_string2": {"value": 7}}},
            47003,
            "argument invalid! data.character_string2.value invalid",
        ),
    ],
)
def test_send_checks(http, sandbox, token, overrides, errcode, errmsg):
    response = send(http, sandbox, token, message(**overrides))
    assert response.json() == {"errcode": errcode, "errmsg": errmsg}
    assert sandbox.accepted == []
    assert sandbox.attempts[0].errcode == errcode


def test_twenty_character_thing_and_pageless_message_pass(http, sandbox, token):
    msg = message(data=_data(**{**GOOD_DATA, "thing1": "x" * 20}))
    del msg["page"], msg["miniprogram_state"], msg["lang"]
    assert errcode_of(send(http, sandbox, token, msg)) == 0


def test_body_not_a_json_object_is_47001(http, sandbox, token):
    assert errcode_of(send(http, sandbox, token, b"{not json")) == 47001
    assert errcode_of(send(http, sandbox, token, [1, 2])) == 47001


def test_without_templates_any_template_passes_but_values_are_checked(http, clock):
    with Sandbox(clock=clock) as sb:
        tok = stable_token(http, sb)["access_token"]
        ok = message(template_id="ANY", page="anywhere", data=_data(thing9="fine"))
        assert errcode_of(send(http, sb, tok, ok)) == 0
        bad = message(template_id="ANY", data=_data(thing9="y" * 21))
        assert send(http, sb, tok, bad).json()["errmsg"] == (
            "argument invalid! data.thing9.value invalid"
        )
        unknown_type = message(template_id="ANY", data=_data(colour1="red"))
        assert errcode_of(send(http, sb, tok, unknown_type)) == 47003


def test_unsubscribed_user_is_43101(http, sandbox, token):
    sandbox.unsubscribe("o-gone")
    response = send(http, sandbox, token, message("o-gone"))
    assert response.json() == {"errcode": 43101, "errmsg": "user refuse to accept the msg"}
    assert errcode_of(send(http, sandbox, token, message("o-here"))) == 0


def test_concurrent_sends_to_one_user_get_43108(http, sandbox, token):
    sandbox.latency = 0.3
    results: dict[str, list[int]] = {"same": [], "other": []}

    def worker(kind: str, openid: str) -> None:
        with requests.Session() as session:
            session.trust_env = False
            results[kind].append(errcode_of(send(session, sandbox, token, message(openid))))

    threads = [
        threading.Thread(target=worker, args=("same", "o-busy")),
        threading.Thread(target=worker, args=("same", "o-busy")),
        threading.Thread(target=worker, args=("other", "o-calm")),
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results["same"]) == [0, 43108]
    assert results["other"] == [0]
    assert time.monotonic() - started < 1.5
    assert sandbox.concurrency_violations() == 1
    assert sandbox.accepted_count("o-busy") == 1
    # Once the first send is done, the user is free again.
    sandbox.latency = 0
    assert errcode_of(send(http, sandbox, token, message("o-busy"))) == 0


def test_latency_is_applied_to_sends(http, sandbox, token):
    sandbox.latency = 0.2
    started = time.monotonic()
    assert errcode_of(send(http, sandbox, token, message())) == 0
    assert time.monotonic() - started >= 0.2


# --- injected faults -------------------------------------------------------------------


def test_fault_errcode(http, sandbox, token):
    sandbox.inject(-1)
    response = send(http, sandbox, token, message())
    assert response.json() == {"errcode": -1, "errmsg": "system error"}
    assert errcode_of(send(http, sandbox, token, message())) == 0
    assert [a.fault for a in sandbox.attempts] == ["-1", None]
    assert sandbox.accepted_count() == 1


def test_fault_injected_43108_is_not_a_violation(http, sandbox, token):
    sandbox.inject(43108)
    assert errcode_of(send(http, sandbox, token, message())) == 43108
    assert sandbox.concurrency_violations() == 0


def test_fault_http_status(http, sandbox, token):
    sandbox.inject("http_502")
    response = send(http, sandbox, token, message())
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html"
    assert "502 Bad Gateway" in response.text
    assert sandbox.attempts[0] == Attempt(
        "o-user-1", "TPL_ORDER", None, "http_502", sandbox.attempts[0].at
    )
    # The connection stays usable for the next request.
    assert errcode_of(send(http, sandbox, token, message())) == 0


def test_fault_non_json(http, sandbox, token):
    sandbox.inject("non_json")
    response = send(http, sandbox, token, message())
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html"
    assert response.text == "<html>busy</html>"
    with pytest.raises(requests.JSONDecodeError):
        response.json()
    assert sandbox.accepted == []


def test_fault_timeout(http, sandbox, token):
    sandbox.inject("timeout")
    with pytest.raises(requests.ReadTimeout):
        send(http, sandbox, token, message(), timeout=0.5)
    assert sandbox.attempts[0].fault == "timeout"
    assert sandbox.attempts[0].errcode is None
    assert errcode_of(send(http, sandbox, token, message())) == 0


def test_fault_lost_answer_delivers_then_never_answers(http, sandbox, token):
    sandbox.inject("lost_answer")
    with pytest.raises(requests.ReadTimeout):
        send(http, sandbox, token, message(), timeout=0.5)
    # judged and delivered like any send: what makes the client's retry a duplicate
    [accepted] = sandbox.accepted
    assert accepted["touser"] == "o-user-1" and int(accepted["msgid"]) == FIRST_MSGID
    assert [(a.errcode, a.fault) for a in sandbox.attempts] == [(0, None)]
    assert errcode_of(send(http, sandbox, token, message())) == 0
    assert sandbox.stats()["duplicates"] == 1


def test_fault_reset(http, sandbox, token):
    sandbox.inject("reset")
    with pytest.raises(requests.ConnectionError) as caught:
        send(http, sandbox, token, message())
    assert "reset" in str(caught.value).lower()
    assert sandbox.attempts[0].fault == "reset"
    assert sandbox.accepted == []
    assert errcode_of(send(http, sandbox, token, message())) == 0


def test_fault_times_and_openid_targeting(http, sandbox, token):
    sandbox.inject(45009, times=2, openid="o-target")
    assert errcode_of(send(http, sandbox, token, message("o-bystander"))) == 0
    assert errcode_of(send(http, sandbox, token, message("o-target"))) == 45009
    assert errcode_of(send(http, sandbox, token, message("o-bystander"))) == 0
    assert errcode_of(send(http, sandbox, token, message("o-target"))) == 45009
    assert errcode_of(send(http, sandbox, token, message("o-target"))) == 0
    assert sandbox.accepted_count("o-target") == 1


def test_fault_comes_before_token_check(http, sandbox):
    sandbox.inject("http_503")
    assert send(http, sandbox, "no-such-token", message()).status_code == 503


def test_inject_rejects_unknown_faults(sandbox):
    with pytest.raises(ValueError):
        sandbox.inject("explode")
    with pytest.raises(ValueError):
        sandbox.inject(-1, times=0)


def test_stop_releases_hanging_timeout_and_closes_idle_connections(http, clock):
    sb = Sandbox(clock=clock).start()
    tok = stable_token(http, sb)["access_token"]
    # A kept-alive connection, idle when stop() comes.
    idle = HTTPConnection("127.0.0.1", sb.port, timeout=5)
    idle.request("GET", "/_sandbox/stats")
    assert idle.getresponse().read()
    sb.inject("timeout")
    outcome: list[BaseException] = []

    def hang() -> None:
        try:
            with requests.Session() as session:
                session.trust_env = False
                send(session, sb, tok, message(), timeout=10)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    deadline = time.monotonic() + 2
    while not sb.attempts and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    sb.stop()
    thread.join(timeout=5)
    assert time.monotonic() - started < 2
    assert len(outcome) == 1 and isinstance(outcome[0], requests.ConnectionError)
    # Its handler thread must not answer on the old connection after stop().
    with pytest.raises((HTTPException, ConnectionError)):
        idle.request("GET", "/_sandbox/stats")
        idle.getresponse()
    idle.close()


# --- records and the control API -------------------------------------------------------


def test_reset_records(http, sandbox, token):
    send(http, sandbox, token, message())
    sandbox.reset_records()
    assert sandbox.accepted == [] and sandbox.attempts == []
    assert sandbox.token_calls == {"stable": 0, "legacy": 0}
    # The token survives a records reset.
    assert errcode_of(send(http, sandbox, token, message())) == 0


def test_http_control_api(http, sandbox, token):
    base = f"{sandbox.url}/_sandbox"
    msg = message()
    send(http, sandbox, token, msg)
    send(http, sandbox, token, msg)  # a duplicate
    send(http, sandbox, token, message("o-user-2"))

    stats = http.get(f"{base}/stats", timeout=5).json()
    assert stats == {
        "accepted": 3,
        "attempts": 3,
        "violations": 0,
        "token_calls": {"stable": 1, "legacy": 0},
        "by_openid": {"o-user-1": 2, "o-user-2": 1},
        "duplicates": 1,
        "received": 3,
        "received_by_openid": {"o-user-1": 2, "o-user-2": 1},
    }
    accepted = http.get(f"{base}/accepted", timeout=5).json()
    assert [r["touser"] for r in accepted] == ["o-user-1", "o-user-1", "o-user-2"]
    assert accepted[0]["msgid"] == str(FIRST_MSGID)

    ok = {"ok": True}
    assert http.post(f"{base}/config", json={"latency": 0.25}, timeout=5).json() == ok
    assert sandbox.latency == 0.25
    http.post(f"{base}/config", json={"latency": 0}, timeout=5)

    body = {"fault": 48001, "times": 1, "openid": "o-user-3"}
    assert http.post(f"{base}/inject", json=body, timeout=5).json() == ok
    assert errcode_of(send(http, sandbox, token, message("o-user-3"))) == 48001
    bad = http.post(f"{base}/inject", json={"fault": "explode"}, timeout=5)
    assert bad.status_code == 400 and "explode" in bad.json()["error"]

    assert http.post(f"{base}/unsubscribe", json={"openid": "o-no"}, timeout=5).json() == ok
    assert errcode_of(send(http, sandbox, token, message("o-no"))) == 43101

    assert http.post(f"{base}/expire_tokens", timeout=5).json() == ok
    assert errcode_of(send(http, sandbox, token, message())) == 42001

    assert http.post(f"{base}/reset", timeout=5).json() == ok
    stats = http.get(f"{base}/stats", timeout=5).json()
    assert stats["accepted"] == 0 and stats["attempts"] == 0 and stats["by_openid"] == {}

    assert http.get(f"{base}/nothing", timeout=5).status_code == 404


def test_wrong_method_and_unknown_path(http, sandbox):
    response = http.get(f"{sandbox.url}{SEND}", timeout=5)
    assert response.json()["errcode"] == 43002
    assert http.get(f"{sandbox.url}/cgi-bin/nothing", timeout=5).status_code == 404


def test_keep_alive_reuses_one_connection(http, sandbox, token):
    ports = set()
    for _ in range(5):
        response = send(http, sandbox, token, message(), stream=True)
        ports.add(response.raw.connection.sock.getsockname()[1])
        _ = response.content  # reading the body returns the connection to the pool
    assert len(ports) == 1


# --- command line ----------------------------------------------------------------------


@pytest.mark.slow
def test_command_line(tmp_path, http):
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.wechat",
            "--port",
            "0",
            "--latency",
            "0.01",
            "--app",
            "wxcli:cli-secret",
            "--port-file",
            str(port_file),
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "sandbox did not write its port file"
            time.sleep(0.02)
        port = int(port_file.read_text())
        base = f"http://127.0.0.1:{port}"
        stats = http.get(f"{base}/_sandbox/stats", timeout=5).json()
        assert stats["accepted"] == 0
        body = {"grant_type": "client_credential", "appid": "wxcli", "secret": "cli-secret"}
        assert (
            "access_token" in http.post(f"{base}/cgi-bin/stable_token", json=body, timeout=5).json()
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"sandbox listening on {base}\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_template_list_shows_added_templates_as_wechat_does(http, sandbox: Sandbox,
                                                            token: str) -> None:
    sandbox.add_template("TPL_SHIP", {"thing2": "商品名称", "enum4": "订单状态"}, title="发货提醒",
                         long_term=True, enums={"enum4": ["待发货", "已发货"]})
    tok = token
    answer = http.get(f"{sandbox.url}/wxaapi/newtmpl/gettemplate",
                      params={"access_token": tok}).json()
    assert answer["errcode"] == 0
    [entry] = [d for d in answer["data"] if d["priTmplId"] == "TPL_SHIP"]
    assert entry == {"priTmplId": "TPL_SHIP", "title": "发货提醒",
                     "content": "商品名称:{{thing2.DATA}}\n订单状态:{{enum4.DATA}}",
                     "example": "", "type": 3,
                     "keywordEnumValueList": [{"keywordCode": "enum4.DATA",
                                               "enumValueList": ["待发货", "已发货"]}]}
    bad = http.get(f"{sandbox.url}/wxaapi/newtmpl/gettemplate",
                   params={"access_token": "nope"}).json()
    assert bad["errcode"] == 40001
    # a value outside the enum list is refused like WeChat does (47003 naming the key)
    sent = http.post(f"{sandbox.url}/cgi-bin/message/subscribe/send",
                     params={"access_token": tok},
                     json={"touser": "o1", "template_id": "TPL_SHIP",
                           "data": {"thing2": {"value": "Tea"}, "enum4": {"value": "已签收"}}})
    assert sent.json()["errcode"] == 47003 and "enum4" in sent.json()["errmsg"]


# --- what the hostile tests need: arrivals, a held door, canned answers -----------------


def test_a_send_is_received_before_its_latency_and_a_held_one_waits(http, sandbox, token):
    sandbox.hold("o-held")
    answers: list[int] = []
    t = threading.Thread(target=lambda: answers.append(
        errcode_of(send(http, sandbox, token, message("o-held"), timeout=30))))
    t.start()
    deadline = time.monotonic() + 10
    while not sandbox.received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [m["touser"] for m in sandbox.received] == ["o-held"]
    assert sandbox.accepted == [] and answers == []  # arrived, not yet answered
    # other users are not held
    assert errcode_of(send(http, sandbox, token, message("o-free"))) == 0
    sandbox.release()
    t.join(timeout=10)
    assert answers == [0]
    assert [m["touser"] for m in sandbox.accepted] == ["o-free", "o-held"]
    assert sandbox.stats()["received_by_openid"] == {"o-held": 1, "o-free": 1}


def test_a_canned_answer_is_sent_verbatim(http, sandbox, token):
    sandbox.inject({"errcode": 0, "errmsg": "ok", "msgid": 10**39}, openid="o-user-1")
    response = send(http, sandbox, token, message())
    assert response.json() == {"errcode": 0, "errmsg": "ok", "msgid": 10**39}
    assert b"1000000000000000000000000000000000000000" in response.content


def test_canned_token_answers_then_normal_service(http, sandbox):
    sandbox.token_answer({"access_token": "T", "expires_in": float("nan")})
    sandbox.token_answer({"errcode": 40001, "errmsg": "invalid credential"})
    first = http.post(f"{sandbox.url}/cgi-bin/stable_token", json={}, timeout=5)
    assert b"NaN" in first.content
    assert stable_token(http, sandbox) == {"errcode": 40001, "errmsg": "invalid credential"}
    assert "access_token" in stable_token(http, sandbox)
    assert sandbox.token_calls["stable"] == 3
