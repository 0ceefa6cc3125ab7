"""The operator console `serve` runs on console.listen: the queue at a glance, one
message's story, re-drive and cancel for operators (DESIGN.md, Console).

app.py guards every request (session, CSRF, role) and turns errors into pages; auth.py
holds passwords, sessions and login limits; pages.py and actions.py are the handlers;
messages.py, ledger.py and overview.py the reads; render.py, chart.py, pages/ and
static/ the HTML, the SVG chart and the stylesheet.
"""

from __future__ import annotations

from typing import Any


def make_app(ctx: Any) -> Any:
    """The console's WSGI app for a web.server.WebContext."""
    from web.console.app import Console

    return Console(ctx)


__all__ = ["make_app"]
