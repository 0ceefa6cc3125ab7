"""WeChat message pushes: parse a (decrypted or plaintext) body into normalised events.
Pure: no I/O. (Building bodies the way WeChat sends them, for the sandbox and the tests,
is sandbox/push_bodies.py's.)

Facts are in shared notes/events.md. The shapes normalised here:

- XML or JSON, told apart by the first non-blank byte (Content-Type is not documented).
- ``List`` is one object, an array, or repeated ``<List>`` elements. In XML the items sit
  inside ``SubscribeMsgPopupEvent`` / ``SubscribeMsgChangeEvent`` / ``SubscribeMsgSentEvent``;
  in JSON ``List`` is top level (both places are accepted in both formats).
- Numbers arrive as numbers or strings (CreateTime, ErrorCode, PopupScene, MsgID). MsgID is
  kept as text, exact: it exceeds 2^53, and Python's json reads integers exactly.

Every refusal is a PushFormatError whose reason is a fixed phrase (at most naming one of
WeChat's field names): never bytes of the body, which hold user data and end up in logs.
Refusals are raised outside the ``except`` that noticed them, so no chained exception
(json's JSONDecodeError keeps the whole document, defusedxml's the entity) tags along.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

from strict_json import DuplicateKey, no_constants, unique_keys

Format = Literal["xml", "json"]

MAX_DEPTH = 32  # nesting levels; WeChat's pushes use 4 at most
MAX_ITEMS = 100  # List entries; a popup offers at most 5 templates, so 100 is generous

POPUP = "subscribe_msg_popup_event"
CHANGE = "subscribe_msg_change_event"
SENT = "subscribe_msg_sent_event"
TEMPLATE_JOB = "TEMPLATESENDJOBFINISH"  # official account template message receipt

# The XML element that holds an event's <List> items.
CONTAINERS = {
    POPUP: "SubscribeMsgPopupEvent",
    CHANGE: "SubscribeMsgChangeEvent",
    SENT: "SubscribeMsgSentEvent",
}

_BLANK = b" \t\r\n"
_TIME = re.compile(r"\d{1,18}")  # fits a signed 64-bit column
_INT = re.compile(r"-?\d{1,10}")


class PushFormatError(ValueError):
    """A body that is not a push we can read; ``reason`` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _refuse(reason: str) -> NoReturn:
    raise PushFormatError(reason)


@dataclass(frozen=True, slots=True)
class PushItem:
    """One entry of a push's List (or the one receipt of TEMPLATESENDJOBFINISH).

    ``status`` is SubscribeStatusString (``accept``/``reject``) for popup and change
    events, and mirrors ``error_status`` for receipts.
    """

    template_id: str | None
    status: str | None
    popup_scene: str | None = None
    msgid: str | None = None
    error_code: int | None = None
    error_status: str | None = None

    @classmethod
    def grant(cls, template_id: str, status: str, popup_scene: str | None = None
              ) -> PushItem:
        """A popup or change event entry."""
        return cls(template_id, status, popup_scene=popup_scene)

    @classmethod
    def receipt(cls, template_id: str, msgid: str, error_code: int = 0,
                error_status: str = "success") -> PushItem:
        """A subscribe_msg_sent_event entry."""
        return cls(template_id, error_status, msgid=msgid, error_code=error_code,
                   error_status=error_status)

    @classmethod
    def template_job(cls, msgid: str, status: str) -> PushItem:
        """The TEMPLATESENDJOBFINISH receipt (Status "success", "failed:user block", ...)."""
        return cls(None, status, msgid=msgid, error_code=0 if status == "success" else None,
                   error_status=status)


@dataclass(frozen=True, slots=True)
class PushMessage:
    """A push, normalised. ``event`` is "" for messages that are not events."""

    to_user: str
    from_user: str  # the user's openid
    create_time: int
    msg_type: str
    event: str
    items: tuple[PushItem, ...] = ()


# --- reading -----------------------------------------------------------------------------

def detect_format(body: bytes) -> Format:
    """Return "xml" or "json", from the first non-blank byte."""
    if not isinstance(body, bytes | bytearray):
        _refuse("body is not bytes")
    first = bytes(body).lstrip(_BLANK)[:1]
    if first == b"<":
        return "xml"
    if first == b"{":
        return "json"
    _refuse("body is neither XML nor JSON")


def outer(body: bytes) -> dict[str, Any]:
    """The top-level fields: the wrapper (ToUserName, Encrypt) of an encrypted push, or
    the whole message of a plaintext one. XML elements with children become dicts,
    repeated elements lists, leaves their stripped text."""
    fmt = detect_format(body)
    try:
        text: str | None = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:
        _refuse("body is not UTF-8")
    return _xml_fields(text) if fmt == "xml" else _json_fields(text)


def _xml_fields(text: str) -> dict[str, Any]:
    # Parse the str, not the bytes: the body is known to be UTF-8, and an encoding
    # declaration in it then cannot make expat decode the bytes some other way.
    root: Element | None = None
    reason = ""
    try:
        # forbid_dtd: WeChat never sends a DTD, so refuse any (billion laughs needs one;
        # defusedxml refuses entities and external references even without this).
        root = safe_xml.fromstring(text, forbid_dtd=True)
    except DefusedXmlException:
        reason = "XML with a DTD or entities is refused"
    except (ParseError, ValueError):
        reason = "malformed XML"
    if root is None:
        _refuse(reason or "malformed XML")
    stack = [(root, 1)]
    while stack:  # iterative, so a deep document cannot exhaust the Python stack
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            _refuse(f"XML nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in element)
    value = _xml_value(root)
    return value if isinstance(value, dict) else {}


def _xml_value(element: Element) -> str | dict[str, Any]:
    if len(element) == 0:
        return (element.text or "").strip()
    fields: dict[str, Any] = {}
    for child in element:
        value = _xml_value(child)
        if child.tag not in fields:
            fields[child.tag] = value
        elif isinstance(fields[child.tag], list):
            fields[child.tag].append(value)
        else:
            fields[child.tag] = [fields[child.tag], value]
    return fields


def _json_fields(text: str) -> dict[str, Any]:
    value: Any = None
    reason = ""
    try:
        # With two FromUserName keys, two parsers could each pick a different one: refuse.
        value = json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constants)
    except DuplicateKey:  # its key is the body's: the reason does not name it
        reason = "duplicate key in JSON"
    except RecursionError:  # json's C scanner stops at the interpreter's recursion limit
        reason = f"JSON nested deeper than {MAX_DEPTH} levels"
    except ValueError:  # JSONDecodeError, over-long integer literals
        reason = "malformed JSON"
    if reason:
        _refuse(reason)
    if not isinstance(value, dict):
        _refuse("JSON body is not an object")
    # Depth is measured after parsing (iteratively): a regex or hand-written pre-scan
    # of the text is either quadratic on hostile strings or slow in pure Python.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            _refuse(f"JSON nested deeper than {MAX_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return value


def _text(value: Any, name: str) -> str | None:
    """A field as text: JSON numbers become their exact digits; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    # floats (a MsgID that lost digits), booleans, objects, arrays, repeated elements
    _refuse(f"{name} is not text")


def _required(fields: dict[str, Any], name: str) -> str:
    value = _text(fields.get(name), name)
    if not value:
        _refuse(f"missing {name}")
    return value


def _integer(value: Any, name: str, pattern: re.Pattern[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if pattern.fullmatch(str(value)):
            return value
    elif isinstance(value, str) and pattern.fullmatch(value.strip()):
        return int(value)
    _refuse(f"{name} is not an integer")


def _msgid(fields: dict[str, Any]) -> str | None:
    # documented as MsgID; MsgId is the customer-service spelling, accepted too
    name = "MsgID" if "MsgID" in fields else "MsgId"
    return _text(fields.get(name), name) or None


def _entries(fields: dict[str, Any], event: str) -> list[dict[str, Any]]:
    """The List entries of a subscribe event, wherever and however they are shaped."""
    container = fields.get(CONTAINERS[event])
    holders = container if isinstance(container, list) else [container]
    lists = [h["List"] for h in holders if isinstance(h, dict) and h.get("List") is not None]
    if not lists and fields.get("List") is not None:
        lists = [fields["List"]]
    if not lists:
        _refuse("missing List")
    entries: list[Any] = []
    for raw in lists:
        if isinstance(raw, dict):
            entries.append(raw)
        elif isinstance(raw, list):
            entries.extend(raw)
        else:
            _refuse("List is neither an object nor an array")
        if len(entries) > MAX_ITEMS:  # refuse rather than silently drop receipts
            _refuse(f"more than {MAX_ITEMS} List items")
    if not all(isinstance(entry, dict) for entry in entries):
        _refuse("List item is not an object")
    return entries


def _item(event: str, entry: dict[str, Any]) -> PushItem:
    template_id = _required(entry, "TemplateId")
    if event == SENT:
        error_status = _text(entry.get("ErrorStatus"), "ErrorStatus")
        return PushItem(
            template_id, error_status, msgid=_msgid(entry),
            error_code=_integer(entry.get("ErrorCode"), "ErrorCode", _INT),
            error_status=error_status)
    return PushItem(template_id, _required(entry, "SubscribeStatusString"),
                    popup_scene=_text(entry.get("PopupScene"), "PopupScene"))


def parse_message(body: bytes) -> PushMessage:
    """A plaintext (or decrypted) push body as a PushMessage; PushFormatError if not."""
    fields = outer(body)
    create_time = _integer(fields.get("CreateTime"), "CreateTime", _TIME)
    if create_time is None:
        _refuse("missing CreateTime")
    event = _text(fields.get("Event"), "Event") or ""
    items: tuple[PushItem, ...] = ()
    if event in CONTAINERS:
        items = tuple(_item(event, entry) for entry in _entries(fields, event))
    elif event == TEMPLATE_JOB:
        status = _text(fields.get("Status"), "Status")
        msgid = _msgid(fields)
        if status is None or msgid is None:
            _refuse("missing MsgID or Status")
        items = (PushItem.template_job(msgid, status),)
    return PushMessage(
        to_user=_required(fields, "ToUserName"),
        from_user=_required(fields, "FromUserName"),
        create_time=create_time,
        msg_type=_required(fields, "MsgType"),
        event=event,
        items=items,
    )


def dedup_key(msg: PushMessage) -> str:
    """A stable key for WeChat's retries of one push (sha256 hex).

    The doc recommends FromUserName + CreateTime for events, but that is not enough:
    one user can produce a popup event and a sent event (or two sent events, for two
    sends) in the same second, and the second push would be dropped as a "retry" of the
    first. So the key also covers the message type, the event and the sorted item
    identities (MsgID, else TemplateId + status). A retry repeats all of these.
    The app is not part of it: openids are per app, so callers storing several apps in
    one table can rely on FromUserName (or prefix the app if they prefer).
    """
    identities = sorted(
        json.dumps(["m", item.msgid] if item.msgid is not None
                   else ["t", item.template_id, item.status])
        for item in msg.items)
    canonical = json.dumps([msg.from_user, msg.create_time, msg.msg_type, msg.event,
                            identities], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
