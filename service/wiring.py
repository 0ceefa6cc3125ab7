"""The objects `run` and `serve` both build from a configuration, built one way.

The templates holder is the one that needs care: it loads templates.yaml with the
configuration it belongs to (LoadContext: the apps, SMS, where relative paths start),
guards every reload with the rows still waiting (a template they name never goes), and
the webhook secrets it holds are the ones the logs mask. At start (template_holder) and
at each reload (adopt) the same three things happen together.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping

from peewee import Database

from config import Config
from db.rows import open_rows_naming
from logs import config_secrets, set_secrets, template_secrets
from templates import LoadContext, TemplateHolder, TemplateSet

# rows still waiting per template name (TemplateHolder's in-use guard)
InUse = Callable[[Iterable[str]], Mapping[str, int]]


def make_daemon_id() -> str:
    """host:pid:random, unique per process: what claimed_by records."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def waiting_rows_naming(db: Database) -> InUse:
    """A TemplateHolder guard: how many wait/sending rows name each template (by name
    or template_id), so a reload never drops a template that rows still need."""

    def count(names: Iterable[str]) -> Mapping[str, int]:
        wanted = list(names)
        if not wanted:
            return {}
        with db.connection_context():
            return open_rows_naming(db, wanted)

    return count


def load_context(config: Config) -> LoadContext:
    """What loading templates.yaml needs of the configuration it belongs to."""
    return LoadContext(config=config, base_dir=config.templates.parent)


def mask_config_secrets(config: Config) -> None:
    """The configuration's credentials are the ones in force in the logs from now."""
    set_secrets("config", config_secrets(config))


def template_holder(config: Config, db: Database) -> TemplateHolder:
    """The templates in force at start, guarded by the waiting rows; their secrets
    masked from now on."""
    holder = TemplateHolder(config.templates, in_use=waiting_rows_naming(db),
                            context=load_context(config))
    set_secrets("templates", template_secrets(holder.current))
    return holder


def adopt(holder: TemplateHolder, fresh: TemplateSet, config: Config) -> None:
    """A reload's new configuration and templates go in force together: the secrets of
    both are the masked ones, the holder serves the new set and watches its file."""
    mask_config_secrets(config)
    set_secrets("templates", template_secrets(fresh))
    holder.adopt(fresh, config.templates, load_context(config))
