"""Push bodies built the way WeChat sends them, for the sandbox's pusher (sandbox/pusher.py)
and the tests: the plaintext message as XML or JSON in each shape WeChat is seen to use,
and its plaintext-mode (signature) or safe-mode (AES, msg_signature) wrapping. Pure: no
I/O.

The reading side is web/push_events.py (Herald's receiver); these builders are checked
against it in round trips, and against the documentation's own example pushes.
"""

from __future__ import annotations

import json
import re
from typing import Any
from xml.sax.saxutils import escape

from web.push_events import CONTAINERS, SENT, TEMPLATE_JOB, Format, PushItem, PushMessage, outer
from web.wxcrypto import PushCipher, signature

__all__ = ["build_message", "wrap_encrypted", "wrap_plain"]

_BLANK = b" \t\r\n"


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _xml_element(tag: str, value: str | int | None, *, cdata: bool = True) -> str:
    if value is None:
        return ""
    inner = _cdata(value) if cdata and isinstance(value, str) else escape(str(value))
    return f"<{tag}>{inner}</{tag}>"


def _number_or_text(value: str | int | None, numbers: bool) -> str | int | None:
    if value is None:
        return None
    if numbers and re.fullmatch(r"-?\d+", str(value)):
        return int(value)
    return str(value)


def _entry_fields(event: str, item: PushItem, numbers: bool) -> list[tuple[str, Any]]:
    if event == SENT:
        return [("TemplateId", item.template_id),
                ("MsgID", _number_or_text(item.msgid, numbers)),
                ("ErrorCode", _number_or_text(item.error_code, numbers)),
                ("ErrorStatus", item.error_status)]
    return [("TemplateId", item.template_id),
            ("SubscribeStatusString", item.status),
            ("PopupScene", _number_or_text(item.popup_scene, numbers))]


def _job_item(msg: PushMessage) -> PushItem:
    if len(msg.items) != 1:
        raise ValueError("TEMPLATESENDJOBFINISH carries exactly one item")
    return msg.items[0]


def build_message(msg: PushMessage, fmt: Format, *, list_shape: str = "auto",
                  numbers: bool = False, create_time_text: bool = False) -> bytes:
    """The plaintext body WeChat would push for ``msg``.

    JSON options mirror what WeChat is seen to send: ``list_shape`` "auto" (a bare object
    for one item, an array for several, as documented), "object" or "array";
    ``numbers`` sends MsgID, ErrorCode and PopupScene as JSON numbers instead of the
    documented strings; ``create_time_text`` sends CreateTime as a string (doc examples)
    instead of a number (real payloads). XML has one shape.
    """
    if list_shape not in ("auto", "object", "array"):
        raise ValueError("list_shape is auto, object or array")
    if fmt == "xml":
        return _build_xml(msg).encode("utf-8")
    if fmt != "json":
        raise ValueError("fmt is xml or json")
    fields: dict[str, Any] = {
        "ToUserName": msg.to_user, "FromUserName": msg.from_user,
        "CreateTime": str(msg.create_time) if create_time_text else msg.create_time,
        "MsgType": msg.msg_type,
    }
    if msg.event:
        fields["Event"] = msg.event
    if msg.event in CONTAINERS:
        entries = [{k: v for k, v in _entry_fields(msg.event, item, numbers) if v is not None}
                   for item in msg.items]
        one = len(entries) == 1
        if list_shape == "object" and not one:
            raise ValueError("a List object holds exactly one item")
        fields["List"] = entries[0] if one and list_shape != "array" else entries
    elif msg.event == TEMPLATE_JOB:
        item = _job_item(msg)
        fields["MsgID"] = _number_or_text(item.msgid, numbers)
        fields["Status"] = item.error_status
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _build_xml(msg: PushMessage) -> str:
    parts = ["<xml>", _xml_element("ToUserName", msg.to_user),
             _xml_element("FromUserName", msg.from_user),
             _xml_element("CreateTime", msg.create_time),
             _xml_element("MsgType", msg.msg_type),
             _xml_element("Event", msg.event or None)]
    if msg.event in CONTAINERS:
        parts.append(f"<{CONTAINERS[msg.event]}>")
        for item in msg.items:
            parts.append("<List>")
            # ids and words in CDATA, numbers bare, as in the doc's examples
            parts.extend(_xml_element(tag, value, cdata=tag not in (
                "MsgID", "ErrorCode", "PopupScene"))
                for tag, value in _entry_fields(msg.event, item, numbers=False))
            parts.append("</List>")
        parts.append(f"</{CONTAINERS[msg.event]}>")
    elif msg.event == TEMPLATE_JOB:
        item = _job_item(msg)
        parts.append(_xml_element("MsgID", item.msgid, cdata=False))
        parts.append(_xml_element("Status", item.error_status))
    parts.append("</xml>")
    return "".join(parts)


def _query(token: str, body: bytes, timestamp: str | int, nonce: str | int
           ) -> dict[str, str]:
    ts, nc = str(timestamp), str(nonce)
    query = {"signature": signature(token, ts, nc), "timestamp": ts, "nonce": nc}
    openid = outer(body).get("FromUserName")
    if isinstance(openid, str) and openid:
        query["openid"] = openid  # WeChat adds it; receivers must not rely on it
    return query


def wrap_plain(token: str, body: bytes, timestamp: str | int, nonce: str | int
               ) -> tuple[dict[str, str], bytes]:
    """Query parameters and body of a plaintext-mode push."""
    return _query(token, body, timestamp, nonce), bytes(body)


def wrap_encrypted(cipher: PushCipher, token: str, body: bytes, fmt: Format,
                   timestamp: str | int, nonce: str | int, *, compatible: bool = False,
                   random16: bytes | None = None) -> tuple[dict[str, str], bytes]:
    """Query parameters and body of a safe-mode push of ``body`` (a plaintext body, as
    build_message makes), or of a compatible-mode one (plaintext fields plus Encrypt)."""
    if fmt not in ("xml", "json"):
        raise ValueError("fmt is xml or json")
    query = _query(token, body, timestamp, nonce)
    encrypted = cipher.encrypt(bytes(body), random16=random16)
    query["encrypt_type"] = "aes"
    query["msg_signature"] = signature(token, query["timestamp"], query["nonce"], encrypted)
    if compatible:
        return query, _with_encrypt(bytes(body), fmt, encrypted)
    to_user = outer(body).get("ToUserName")
    to_user = to_user if isinstance(to_user, str) else ""
    if fmt == "json":
        wrapper = json.dumps({"ToUserName": to_user, "Encrypt": encrypted},
                             separators=(",", ":"))
        return query, wrapper.encode("utf-8")
    return query, ("<xml>" + _xml_element("ToUserName", to_user)
                   + _xml_element("Encrypt", encrypted) + "</xml>").encode("utf-8")


def _with_encrypt(body: bytes, fmt: Format, encrypted: str) -> bytes:
    if fmt == "json":
        fields = json.loads(body)
        fields["Encrypt"] = encrypted
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    end = body.rstrip(_BLANK)
    if not end.endswith(b"</xml>"):
        raise ValueError("an XML push ends with </xml>")
    return end[:-len(b"</xml>")] + _xml_element("Encrypt", encrypted).encode() + b"</xml>"

