"""The events job: apply pushed facts (receipts, grants) to rows and the ledger (being
built)."""

from __future__ import annotations

import threading
from typing import Any


class Applier:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
