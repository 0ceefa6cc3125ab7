"""Deleting finished rows past their retention, in short batches (jobs/purge.py runs
it): the queue's open rows are out of reach of every statement here."""

from __future__ import annotations

import threading
from datetime import datetime

from peewee import Database

from db.models import FINISHED, MsgEvent, MsgList, PushEvent


def purge_status(db: Database, status: str, cutoff: datetime, *, batch: int,
                 stopping: threading.Event | None = None) -> tuple[int, int]:
    """Delete rows of one finished status with updated_at before `cutoff`.

    Returns (rows deleted, transactions used). Stops when a batch comes back short
    (nothing more is old enough) or `stopping` is set.
    """
    if status not in FINISHED:
        # the one guard that keeps the queue itself out of reach
        raise ValueError(f"purge only deletes finished rows ({', '.join(FINISHED)}), "
                         f"not {status!r}")
    expired = (MsgList.status == status) & (MsgList.updated_at < cutoff)
    total = transactions = 0
    while not (stopping is not None and stopping.is_set()):
        with db.atomic():
            transactions += 1
            ids = [r.id for r in MsgList.select(MsgList.id).where(expired).limit(batch)
                   .execute(db)]
            if ids:
                total += MsgList.delete().where(MsgList.id.in_(ids) & expired).execute(db)
                # a row's history goes with it (a re-driven row kept its id: its
                # status filter above keeps it out of reach)
                kept = [r.id for r in MsgList.select(MsgList.id).where(MsgList.id.in_(ids))
                        .execute(db)]
                MsgEvent.delete().where(MsgEvent.msg_id.in_(sorted(set(ids) - set(kept)))
                                        ).execute(db)
        if len(ids) < batch:
            break
    return total, transactions


def purge_events(db: Database, cutoff: datetime, *, batch: int,
                 stopping: threading.Event | None = None) -> int:
    """Delete applied push_event rows received before `cutoff` (unapplied ones stay:
    they still have something to tell)."""
    old = (PushEvent.received_at < cutoff) & PushEvent.applied_at.is_null(False)
    total = 0
    while not (stopping is not None and stopping.is_set()):
        with db.atomic():
            ids = [r.id for r in PushEvent.select(PushEvent.id).where(old).limit(batch)
                   .execute(db)]
            if ids:
                total += PushEvent.delete().where(PushEvent.id.in_(ids) & old).execute(db)
        if len(ids) < batch:
            break
    return total


__all__ = ["purge_events", "purge_status"]
