"""What the page and action handlers use of the console: its context, config, database,
renderer and overview cache. Typed as a Protocol so pages.py and actions.py need not
import app.py, which imports them (no import circle, not even for the type checker)."""

from __future__ import annotations

from typing import Any, Protocol

from peewee import Database

from config import Config
from web.console.overview import SnapshotCache
from web.console.render import Renderer


class ConsoleParts(Protocol):
    ctx: Any  # web.server.WebContext: the templates holder in force
    cfg: Config
    db: Database
    renderer: Renderer
    cache: SnapshotCache
