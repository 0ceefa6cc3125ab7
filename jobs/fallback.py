"""Fallback: which template a failed row's news goes on with, and its next hop.

A row that ends `fail` with a code in its template's `fallback_on` gets a hop: a new
row (same app, openid, phone, params; parent_id the failed row) on the next template.
A hop that fails goes on down the root's chain, never round it (load refuses loops).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

from db import rows as db_rows
from db.decode import Row
from db.outcomes import Hop, Outcome
from logs import redact
from runtime import Runtime
from templates import Template

log = logging.getLogger("herald.dispatch")


def with_hop(rt: Runtime, outcome: Outcome, row: Row, tpl: Template, errcode: int | None,
              reason_code: str | None) -> Outcome:
    """A failed row whose template chain goes on gets its next hop."""
    try:
        nxt = next_template(rt, row, tpl, errcode, reason_code)
    except Exception as exc:  # noqa: BLE001 - a fallback lookup must not stop the batch
        log.warning("row %s: fallback lookup failed: %s", row.id, redact(str(exc))[:160])
        return outcome
    if nxt is None:
        return outcome
    return replace(outcome, hop=Hop(template=nxt, app=row.app, openid=row.openid,
                                    phone=row.phone, params=row.params,
                                    priority=row.priority, expire_at=row.expire_at,
                                    dedup_key=hop_dedup_key(row.dedup_key, row.id, nxt)))


def next_template(rt: Runtime, row: Row, tpl: Template, errcode: int | None,
                   reason_code: str | None) -> str | None:
    if row.parent_id is None:
        if tpl.falls_back_on(errcode, reason_code):
            return tpl.fallback[0]
        return None
    # a hop that fails goes on down its chain: the root's list after this hop's template
    chain = ancestors(rt, row.parent_id)
    if not chain:
        return None
    root = rt.templates.current.templates.get(chain[-1])
    if root is None or tpl.name not in root.fallback:
        return tpl.fallback[0] if tpl.fallback else None
    rest = root.fallback[root.fallback.index(tpl.name) + 1:]
    return rest[0] if rest else None


def ancestors(rt: Runtime, parent_id: int) -> list[str]:
    """Template names from the parent up to the root (at most 10 hops)."""
    return db_rows.ancestors(rt.db, parent_id)


def hop_dedup_key(parent_key: str | None, parent_id: int, template: str) -> str:
    """The hop's dedup_key, derived from its parent's: a parent failed twice (re-driven)
    still has one hop per template."""
    key = f"{parent_key}>{template}" if parent_key else f"herald:{parent_id}>{template}"
    if len(key) <= 191:
        return key
    return "herald:h:" + hashlib.sha256(key.encode()).hexdigest()


__all__ = ["ancestors", "hop_dedup_key", "next_template", "with_hop"]
