"""The push receiver: WeChat message push and SMS status callbacks (being built)."""

from __future__ import annotations

from typing import Any

from web.wsgi import Router, WSGIApp, text


def make_app(ctx: Any) -> WSGIApp:
    router = Router()
    router.add("/healthz", GET=lambda req: text("ok\n"))
    return router
