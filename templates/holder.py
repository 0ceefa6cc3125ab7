"""The templates in force, reloaded when the file changes (SIGHUP or its mtime)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from templates.load import LoadContext, load_templates
from templates.model import TemplateError, TemplateSet

log = logging.getLogger("herald.templates")

InUse = Callable[[Iterable[str]], Mapping[str, int]]


class TemplateHolder:
    """The templates in force. A broken edit is logged and the last good set stays; so
    does a new set that would drop a template waiting rows still name."""

    def __init__(self, path: Path | str, *, in_use: InUse | None = None,
                 context: LoadContext | None = None) -> None:
        self.path = Path(path)
        self.in_use = in_use
        self.context = context
        self.failures = 0  # reloads refused (metrics)
        self._lock = threading.Lock()
        self._current = load_templates(self.path, context=context)
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    @property
    def current(self) -> TemplateSet:
        return self._current

    def prepare(self, path: Path | str | None = None, context: LoadContext | None = None
                ) -> TemplateSet:
        """The set `path` (default: this holder's file, with its context) would bring
        in: loaded, checked, and refused (TemplateError) if it drops a template that
        waiting rows still name, whether the file changed in place or is another one.
        Changes nothing; adopt() puts it in force."""
        target = self.path if path is None else Path(path)
        fresh = load_templates(target, context=self.context if context is None else context)
        lost = self._current.names_and_ids() - fresh.names_and_ids()
        waiting = dict(self.in_use(sorted(lost))) if (lost and self.in_use) else {}
        waiting = {k: n for k, n in waiting.items() if n}
        if waiting:
            named = ", ".join(f"{k} ({n} rows)" for k, n in sorted(waiting.items()))
            raise TemplateError(target, [f"the new file drops templates that waiting "
                                         f"rows still name: {named}"])
        return fresh

    def adopt(self, fresh: TemplateSet, path: Path | str | None = None,
              context: LoadContext | None = None) -> None:
        """Put a prepare()d set in force; with `path`, this holder watches that file from
        now on (and `context` checks its next reloads). The in-use guard stays."""
        with self._lock:
            if path is not None:
                self.path = Path(path)
            if context is not None:
                self.context = context
            self._current = fresh
            self._mtime = self._stat()

    def reload(self) -> bool:
        """Load the file again. True if the new set is in force. Never raises."""
        mtime = self._stat()
        try:
            fresh = self.prepare()
        except TemplateError as exc:
            return self._refused(mtime, str(exc))
        except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
            return self._refused(mtime, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._current = fresh
            self._mtime = mtime
        log.info("templates reloaded from %s: %d templates", self.path, len(fresh.templates))
        return True

    def _refused(self, mtime: float | None, why: str) -> bool:
        with self._lock:
            self._mtime = mtime  # do not re-report the same broken file every poll
            self.failures += 1
        log.error("templates not reloaded, keeping the last good set (%d templates): %s",
                  len(self._current.templates), why)
        return False

    def reload_if_changed(self) -> bool | None:
        """Reload when the file's mtime changed; None when it did not."""
        if self._stat() == self._mtime:
            return None
        return self.reload()


__all__ = ["InUse", "TemplateHolder"]
