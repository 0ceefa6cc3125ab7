"""web/push_events.py: the doc's payloads, every List shape, round trips through the
builders and the safe-mode wrapper (sandbox/push_bodies.py), the dedup key, and every
refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox.push_bodies import build_message, wrap_encrypted, wrap_plain
from web.push_events import (
    CHANGE,
    POPUP,
    SENT,
    TEMPLATE_JOB,
    PushFormatError,
    PushItem,
    PushMessage,
    dedup_key,
    detect_format,
    outer,
    parse_message,
)
from web.wxcrypto import PushCipher, check_signature

MARKER = "MARKER-x9Qw-payload"
BIG_MSGID = "18446744073709551615"  # 2^64 - 1: far above 2^53, where floats lose digits
TID_A = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
TID_B = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"

# --- the doc's payloads (subscribe-message.html, notes/events.md section 2) -------------

DOC_POPUP_XML = (
    b'<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName>'
    b'<![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>\n'
    b'<CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType><Event>'
    b'<![CDATA[subscribe_msg_popup_event]]></Event>\n'
    b'<SubscribeMsgPopupEvent>\n'
    b' <List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>'
    b'<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>'
    b'2</PopupScene></List>\n'
    b' <List><TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId>'
    b'<SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>'
    b'2</PopupScene></List>\n'
    b'</SubscribeMsgPopupEvent></xml>'
)

DOC_POPUP_JSON = (
    b'{"ToUserName":"gh_123456789abc","FromUserName":"o7esq5OI1Uej6Xixw1lA2H7XDVbc",'
    b'"CreateTime":"1620973045","MsgType":"event",\n'
    b' "Event":"subscribe_msg_popup_event",'
    b'"List":[{"TemplateId":"hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vzyvQu7O68",'
    b'"SubscribeStatusString":"accept","PopupScene":"0"}]}'
)

DOC_CHANGE_XML = (
    b'<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName>'
    b'<![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>\n'
    b'<CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType><Event>'
    b'<![CDATA[subscribe_msg_change_event]]></Event>\n'
    b'<SubscribeMsgChangeEvent><List><TemplateId>'
    b'<![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>'
    b'<SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List>'
    b'</SubscribeMsgChangeEvent></xml>'
)

DOC_CHANGE_JSON = (
    b'{"ToUserName":"gh_123456789abc","FromUserName":"o7esq5OI1Uej6Xixw1lA2H7XDVbc",'
    b'"CreateTime":"1610969440","MsgType":"event",\n'
    b' "Event":"subscribe_msg_change_event",'
    b'"List":[{"TemplateId":"BEwX0BOT3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8",'
    b'"SubscribeStatusString":"reject"}]}'
)

DOC_SENT_XML = (
    b'<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName>'
    b'<![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>\n'
    b'<CreateTime>1620963428</CreateTime><MsgType><![CDATA[event]]></MsgType><Event>'
    b'<![CDATA[subscribe_msg_sent_event]]></Event>\n'
    b'<SubscribeMsgSentEvent><List><TemplateId>'
    b'<![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>\n'
    b' <MsgID>1700827132819554304</MsgID><ErrorCode>0</ErrorCode><ErrorStatus>'
    b'<![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>'
)

DOC_SENT_JSON = (
    b'{"ToUserName":"gh_123456789abc","FromUserName":"o7esq5PHRGBQYmeNyfG064wEFVpQ",'
    b'"CreateTime":"1620963428","MsgType":"event",\n'
    b' "Event":"subscribe_msg_sent_event",'
    b'"List":{"TemplateId":"BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8",'
    b'"MsgID":"1864323726461255680","ErrorCode":"0","ErrorStatus":"success"}}'
)

# Official account template message receipt (its doc's example shape).
JOB_XML = (
    b'<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><FromUserName>'
    b'<![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName>\n'
    b'<CreateTime>1395658984</CreateTime><MsgType><![CDATA[event]]></MsgType><Event>'
    b'<![CDATA[TEMPLATESENDJOBFINISH]]></Event>\n'
    b'<MsgID>200163840</MsgID><Status><![CDATA[failed:user block]]></Status></xml>'
)

# message-push.html, plaintext mode example
DOC_DEBUG_JSON = (
    b'{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY",'
    b'"CreateTime":1714037059,"MsgType":"event","Event":"debug_demo",'
    b'"debug_str":"hello world"}'
)


def test_doc_popup_xml() -> None:
    msg = parse_message(DOC_POPUP_XML)
    assert msg == PushMessage(
        "gh_123456789abc", "otFpruAK8D-E6EfStSYonYSBZ8_4", 1610969440, "event", POPUP,
        (PushItem(TID_A, "accept", popup_scene="2"), PushItem(TID_B, "reject", popup_scene="2")))


def test_doc_popup_json_with_string_create_time_and_array() -> None:
    msg = parse_message(DOC_POPUP_JSON)
    assert msg.create_time == 1620973045
    assert msg.items == (PushItem.grant("hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vzyvQu7O68",
                                        "accept", "0"),)


@pytest.mark.parametrize("body", [DOC_CHANGE_XML, DOC_CHANGE_JSON])
def test_doc_change_events(body: bytes) -> None:
    msg = parse_message(body)
    assert msg.event == CHANGE
    assert [(i.status, i.popup_scene) for i in msg.items] == [("reject", None)]


def test_doc_sent_xml() -> None:
    (item,) = parse_message(DOC_SENT_XML).items
    assert item == PushItem.receipt(TID_A, "1700827132819554304", 0, "success")


def test_doc_sent_json_list_as_object_and_string_error_code() -> None:
    msg = parse_message(DOC_SENT_JSON)
    assert msg.event == SENT
    assert msg.items == (PushItem(
        "BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8", "success",
        msgid="1864323726461255680", error_code=0, error_status="success"),)


@pytest.mark.parametrize("status, code", [
    ("success", 0), ("failed:user block", None), ("failed: system failed", None)])
def test_template_job_finish(status: str, code: int | None) -> None:
    msg = parse_message(JOB_XML.replace(b"failed:user block", status.encode()))
    assert msg.event == TEMPLATE_JOB
    assert msg.items == (PushItem(None, status, msgid="200163840", error_code=code,
                                  error_status=status),)


def test_template_job_finish_json_number_msgid() -> None:
    body = (b'{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1,"MsgType":"event",'
            b'"Event":"TEMPLATESENDJOBFINISH","MsgID":' + BIG_MSGID.encode()
            + b',"Status":"success"}')
    assert parse_message(body).items == (PushItem.template_job(BIG_MSGID, "success"),)


def test_other_events_are_kept_as_is_without_items() -> None:
    msg = parse_message(DOC_DEBUG_JSON)
    assert (msg.event, msg.items, msg.create_time) == ("debug_demo", (), 1714037059)
    text = parse_message(b'<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>'
                         b'<CreateTime>5</CreateTime><MsgType>text</MsgType>'
                         b'<Content>hi</Content></xml>')
    assert (text.msg_type, text.event) == ("text", "")


# --- format detection and the wrapper ---------------------------------------------------

@pytest.mark.parametrize("body, fmt", [
    (b"<xml/>", "xml"), (b" \r\n\t<xml/>", "xml"), (b"{}", "json"), (b"\n  {}", "json")])
def test_detect_format(body: bytes, fmt: str) -> None:
    assert detect_format(body) == fmt


@pytest.mark.parametrize("body", [b"", b"   ", b"[1]", b"hello", b"\xef\xbb\xbf{}", "{}"])
def test_detect_format_refuses(body: Any) -> None:
    with pytest.raises(PushFormatError):
        detect_format(body)


def test_outer_reads_both_wrappers() -> None:
    assert outer(b'<xml><ToUserName><![CDATA[gh_1]]></ToUserName>'
                 b'<Encrypt><![CDATA[abc+/=]]></Encrypt></xml>') == {
        "ToUserName": "gh_1", "Encrypt": "abc+/="}
    assert outer(b'{"ToUserName":"gh_1","Encrypt":"abc+/="}') == {
        "ToUserName": "gh_1", "Encrypt": "abc+/="}


# --- shapes and numbers -----------------------------------------------------------------

def _json_sent(list_value: Any, **top: Any) -> bytes:
    fields = {"ToUserName": "gh_1", "FromUserName": "o1", "CreateTime": 1700000000,
              "MsgType": "event", "Event": SENT, "List": list_value, **top}
    return json.dumps(fields).encode()


def _entry(msgid: Any, code: Any = "0") -> dict[str, Any]:
    return {"TemplateId": "T", "MsgID": msgid, "ErrorCode": code, "ErrorStatus": "success"}


@pytest.mark.parametrize("msgid", [int(BIG_MSGID), BIG_MSGID, 1864323726461255680,
                                   "1864323726461255680"])
def test_big_msgid_is_exact_text_from_json_number_or_string(msgid: Any) -> None:
    (item,) = parse_message(_json_sent(_entry(msgid))).items
    assert item.msgid == str(msgid)
    assert isinstance(item.msgid, str)


def test_big_msgid_from_xml_and_raw_json_text() -> None:
    # raw text, not via json.dumps, to be sure nothing on the way is a float
    raw = (b'{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"event",'
           b'"Event":"subscribe_msg_sent_event","List":{"TemplateId":"T","MsgID":'
           + BIG_MSGID.encode() + b',"ErrorCode":0,"ErrorStatus":"success"}}')
    assert parse_message(raw).items[0].msgid == BIG_MSGID
    xml = DOC_SENT_XML.replace(b"1700827132819554304", BIG_MSGID.encode())
    assert parse_message(xml).items[0].msgid == BIG_MSGID


@pytest.mark.parametrize("code, expected", [("0", 0), (0, 0), (" 0 ", 0), ("-1", -1),
                                            (40001, 40001), (None, None)])
def test_error_code_as_string_or_number(code: Any, expected: int | None) -> None:
    assert parse_message(_json_sent(_entry("1", code))).items[0].error_code == expected


@pytest.mark.parametrize("create_time", [1700000000, "1700000000", " 1700000000 "])
def test_create_time_as_int_or_string(create_time: Any) -> None:
    assert parse_message(_json_sent([], CreateTime=create_time)).create_time == 1700000000


def test_list_as_object_array_empty_and_inside_a_container() -> None:
    one, two = _entry("1"), _entry("2")
    assert len(parse_message(_json_sent(one)).items) == 1
    assert len(parse_message(_json_sent([one, two])).items) == 2
    assert parse_message(_json_sent([])).items == ()
    wrapped = _json_sent(None, SubscribeMsgSentEvent={"List": [one, two]})
    assert [i.msgid for i in parse_message(wrapped).items] == ["1", "2"]


def test_xml_single_list_and_list_at_top_level() -> None:
    single = parse_message(DOC_CHANGE_XML)
    assert len(single.items) == 1
    top = DOC_CHANGE_XML.replace(b"<SubscribeMsgChangeEvent>", b"").replace(
        b"</SubscribeMsgChangeEvent>", b"")
    assert parse_message(top) == single


def test_exactly_100_items_are_accepted() -> None:
    assert len(parse_message(_json_sent([_entry(str(n)) for n in range(100)])).items) == 100


# --- round trips through the builders ---------------------------------------------------

def _messages() -> list[PushMessage]:
    grants = (PushItem.grant(TID_A, "accept", "0"), PushItem.grant(TID_B, "reject", "0"))
    receipts = (PushItem.receipt("T1", BIG_MSGID),
                PushItem.receipt("T2", "1864323726461255680", 10005, "failed: system"))
    base = dict(to_user="gh_123456789abc", from_user="oUser-1", create_time=1714112445,
                msg_type="event")
    return [
        PushMessage(**base, event=POPUP, items=grants[:1]),  # type: ignore[arg-type]
        PushMessage(**base, event=POPUP, items=grants),  # type: ignore[arg-type]
        PushMessage(**base, event=POPUP,  # type: ignore[arg-type]
                    items=(PushItem.grant(TID_A, "accept"),)),
        PushMessage(**base, event=CHANGE,  # type: ignore[arg-type]
                    items=(PushItem.grant(TID_A, "reject"),)),
        PushMessage(**base, event=SENT, items=receipts[:1]),  # type: ignore[arg-type]
        PushMessage(**base, event=SENT, items=receipts),  # type: ignore[arg-type]
        PushMessage(**base, event=TEMPLATE_JOB,  # type: ignore[arg-type]
                    items=(PushItem.template_job("200163840", "failed:user block"),)),
        PushMessage(**base, event=TEMPLATE_JOB,  # type: ignore[arg-type]
                    items=(PushItem.template_job(BIG_MSGID, "success"),)),
        PushMessage(**base, event="debug_demo"),  # type: ignore[arg-type]
        PushMessage(**{**base, "from_user": "o]]>&<中"}, event=POPUP,  # type: ignore[arg-type]
                    items=grants[:1]),
    ]


@pytest.mark.parametrize("msg", _messages(), ids=lambda m: f"{m.event}-{len(m.items)}")
@pytest.mark.parametrize("options", [
    {"fmt": "xml"},
    {"fmt": "json"},
    {"fmt": "json", "numbers": True},
    {"fmt": "json", "create_time_text": True},
    {"fmt": "json", "list_shape": "array"},
    {"fmt": "json", "list_shape": "array", "numbers": True, "create_time_text": True},
])
def test_round_trip(msg: PushMessage, options: dict[str, Any]) -> None:
    options = dict(options)
    body = build_message(msg, options.pop("fmt"), **options)
    assert parse_message(body) == msg


def test_builder_list_shapes() -> None:
    one = _messages()[0]
    assert isinstance(json.loads(build_message(one, "json"))["List"], dict)
    assert isinstance(json.loads(build_message(one, "json", list_shape="array"))["List"], list)
    assert isinstance(json.loads(build_message(_messages()[1], "json"))["List"], list)
    with pytest.raises(ValueError):
        build_message(_messages()[1], "json", list_shape="object")
    sent = json.loads(build_message(_messages()[4], "json", numbers=True))
    assert sent["List"]["MsgID"] == int(BIG_MSGID) and sent["List"]["ErrorCode"] == 0
    assert b"<MsgID>" + BIG_MSGID.encode() + b"</MsgID>" in build_message(_messages()[4], "xml")


# --- the safe-mode and plaintext wrappers -----------------------------------------------

DOC_ENCRYPT = (
    "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPx"
    "LKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMu"
    "FUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDr"
    "M1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="
)
DOC_SAFE_MSG = DOC_DEBUG_JSON.replace(b"1714037059", b"1714112445")


def test_wrap_encrypted_reproduces_the_docs_safe_mode_push() -> None:
    cipher = PushCipher("A" * 43, "wxba5fad812f8e6fb9")
    query, body = wrap_encrypted(cipher, "AAAAA", DOC_SAFE_MSG, "json", 1714112445,
                                 "415670741", random16=b"a8eedb185eb2fecf")
    # the doc's push URL and body, parameter for parameter
    assert query == {
        "signature": "6c5c811b55cc85e0e1b54100749188c20beb3f5d", "timestamp": "1714112445",
        "nonce": "415670741", "openid": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "encrypt_type": "aes",
        "msg_signature": "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"}
    assert json.loads(body) == {"ToUserName": "gh_97417a04a28d", "Encrypt": DOC_ENCRYPT}


def test_wrap_plain_reproduces_the_docs_plaintext_push() -> None:
    query, body = wrap_plain("AAAAA", DOC_DEBUG_JSON, "1714037059", "486452656")
    assert query["signature"] == "899cf89e464efb63f54ddac96b0a0a235f53aa78"
    assert body == DOC_DEBUG_JSON


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("compatible", [False, True])
def test_encrypted_push_round_trip(fmt: Any, compatible: bool) -> None:
    cipher = PushCipher("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "wx0123456789abcdef")
    msg = _messages()[5]
    plain = build_message(msg, fmt)
    query, body = wrap_encrypted(cipher, "tok", plain, fmt, "1700000000", "42",
                                 compatible=compatible)
    assert detect_format(body) == fmt
    wrapper = outer(body)
    assert wrapper["ToUserName"] == "gh_123456789abc"
    assert query["encrypt_type"] == "aes"
    assert check_signature(query["msg_signature"], "tok", query["timestamp"],
                           query["nonce"], wrapper["Encrypt"])
    assert check_signature(query["signature"], "tok", query["timestamp"], query["nonce"])
    assert parse_message(cipher.decrypt(wrapper["Encrypt"])) == msg
    if compatible:  # plaintext fields travel alongside the ciphertext
        assert parse_message(body) == msg
    else:
        assert set(wrapper) == {"ToUserName", "Encrypt"}
        # a tampered ciphertext fails the signature before any decryption
        assert not check_signature(query["msg_signature"], "tok", query["timestamp"],
                                   query["nonce"], wrapper["Encrypt"][:-4] + "AAA=")


# --- dedup ------------------------------------------------------------------------------

def test_dedup_key_is_stable_across_formats_shapes_and_order() -> None:
    msg = _messages()[5]
    reordered = PushMessage(msg.to_user, msg.from_user, msg.create_time, msg.msg_type,
                            msg.event, msg.items[::-1])
    other_app = PushMessage("gh_other", msg.from_user, msg.create_time, msg.msg_type,
                            msg.event, msg.items)
    keys = {dedup_key(parse_message(build_message(msg, "xml"))),
            dedup_key(parse_message(build_message(msg, "json", numbers=True))),
            dedup_key(reordered), dedup_key(other_app)}
    assert len(keys) == 1
    assert len(keys.pop()) == 64


def test_dedup_key_separates_pushes_that_share_user_and_second() -> None:
    base = ("gh_1", "oUser", 1700000000, "event")
    pushes = [
        PushMessage(*base, POPUP, (PushItem.grant("T", "accept"),)),
        PushMessage(*base, POPUP, (PushItem.grant("T", "reject"),)),
        PushMessage(*base, CHANGE, (PushItem.grant("T", "reject"),)),
        PushMessage(*base, SENT, (PushItem.receipt("T", "1"),)),
        PushMessage(*base, SENT, (PushItem.receipt("T", "2"),)),
        PushMessage(*base, SENT, (PushItem.receipt("T", "1"), PushItem.receipt("T", "2"))),
        PushMessage("gh_1", "oUser", 1700000001, "event", SENT, (PushItem.receipt("T", "1"),)),
        PushMessage("gh_1", "oOther", 1700000000, "event", SENT, (PushItem.receipt("T", "1"),)),
    ]
    assert len({dedup_key(p) for p in pushes}) == len(pushes)


# --- refusals ---------------------------------------------------------------------------

M = MARKER.encode()
HOSTILE: dict[str, Any] = {
    "billion laughs": b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "' + M + b'">'
                      b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
                      b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
                      b'<xml><FromUserName>&lol3;</FromUserName></xml>',
    "external entity": b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY ' + M
                       + b' SYSTEM "file:///etc/' + M + b'">]><xml><a>&' + M + b';</a></xml>',
    "bare DTD": b'<!DOCTYPE xml SYSTEM "http://' + M + b'/x.dtd"><xml><a>1</a></xml>',
    "undefined entity": b"<xml><a>&" + M + b";</a></xml>",
    "malformed XML": b"<xml><" + M + b"></xml>",
    "malformed JSON": b'{"FromUserName": "' + M + b'",',
    "not XML or JSON": M,
    "JSON array": b'["' + M + b'"]',
    "deep JSON": b'{"a":' * 33 + b'"' + M + b'"' + b"}" * 33,
    "very deep JSON": b'{"' + M + b'":' + b"[" * 50000 + b"]" * 50000 + b"}",
    "deep XML": b"<xml>" + b"<a>" * 40 + M + b"</a>" * 40 + b"</xml>",
    "too many items (JSON)": _json_sent([_entry(MARKER)] * 101),
    "too many items (XML)": DOC_CHANGE_XML.replace(
        b"<SubscribeMsgChangeEvent>", b"<SubscribeMsgChangeEvent>" + (b"<List><TemplateId>"
        + M + b"</TemplateId><SubscribeStatusString>reject</SubscribeStatusString></List>")
        * 100),
    "non-UTF-8": b'{"FromUserName":"\xff\xfe' + M + b'"}',
    "non-UTF-8 XML declared GBK": '<?xml version="1.0" encoding="GBK"?><xml><a>中</a></xml>'
                                  .encode("gbk") + M,
    "NaN": b'{"CreateTime": NaN, "x": "' + M + b'"}',
    "duplicate key": b'{"FromUserName":"a","FromUserName":"' + M + b'"}',
    "duplicate XML field": DOC_SENT_XML.replace(
        b"<MsgType>", b"<FromUserName>" + M + b"</FromUserName><MsgType>"),
    "huge integer": b'{"CreateTime":' + b"9" * 5000 + b',"x":"' + M + b'"}',
    "missing FromUserName": _json_sent([], FromUserName=None, x=MARKER),
    "missing CreateTime": _json_sent([], CreateTime=None, x=MARKER),
    "CreateTime not a number": _json_sent([], CreateTime=MARKER),
    "CreateTime negative": _json_sent([], CreateTime=-5, x=MARKER),
    "CreateTime bool": _json_sent([], CreateTime=True, x=MARKER),
    "CreateTime float": _json_sent([], CreateTime=1.5, x=MARKER),
    "missing List": _json_sent(None, x=MARKER),
    "List is text": _json_sent(MARKER),
    "List item is text": _json_sent([MARKER]),
    "TemplateId is an object": _json_sent({"TemplateId": {"x": MARKER}}),
    "missing TemplateId": _json_sent({"MsgID": MARKER}),
    "MsgID float": _json_sent(_entry(1.8446744073709552e19) | {"x": MARKER}),
    "ErrorCode text": _json_sent(_entry("1", MARKER)),
    "ErrorCode bool": _json_sent(_entry("1", False) | {"x": MARKER}),
    "popup without status": json.dumps({
        "ToUserName": "gh", "FromUserName": MARKER, "CreateTime": 1, "MsgType": "event",
        "Event": POPUP, "List": {"TemplateId": "T"}}).encode(),
    "job without Status": JOB_XML.replace(b"<Status><![CDATA[failed:user block]]></Status>",
                                          b"<x>" + M + b"</x>"),
    "str body": '{"FromUserName":"' + MARKER + '"}',
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bodies_are_refused_without_quoting_them(case: str) -> None:
    with pytest.raises(PushFormatError) as caught:
        parse_message(HOSTILE[case])
    exc = caught.value
    text = str(exc) + repr(exc) + exc.reason
    assert MARKER not in text and "etc/" not in text and "\ufffd" not in text
    assert len(exc.reason) < 60
    assert exc.__context__ is None and exc.__cause__ is None


@pytest.mark.parametrize("case, reason", [
    ("billion laughs", "XML with a DTD or entities is refused"),
    ("external entity", "XML with a DTD or entities is refused"),
    ("bare DTD", "XML with a DTD or entities is refused"),
    ("not XML or JSON", "body is neither XML nor JSON"),
    ("deep JSON", "JSON nested deeper than 32 levels"),
    ("very deep JSON", "JSON nested deeper than 32 levels"),
    ("deep XML", "XML nested deeper than 32 levels"),
    ("too many items (JSON)", "more than 100 List items"),
    ("too many items (XML)", "more than 100 List items"),
    ("non-UTF-8", "body is not UTF-8"),
    ("duplicate key", "duplicate key in JSON"),
    ("duplicate XML field", "FromUserName is not text"),
    ("MsgID float", "MsgID is not text"),
    ("missing List", "missing List"),
])
def test_refusal_reasons(case: str, reason: str) -> None:
    with pytest.raises(PushFormatError) as caught:
        parse_message(HOSTILE[case])
    assert caught.value.reason == reason


def test_json_depth_limit_is_32_levels() -> None:
    ok = b'{"a":' * 31 + b'{"b":1}' + b"}" * 31  # 32 levels of objects
    assert outer(ok)
    with pytest.raises(PushFormatError):
        outer(b'{"a":' * 32 + b'{"b":1}' + b"}" * 32)  # 33
