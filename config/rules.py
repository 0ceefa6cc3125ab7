"""Checks that involve more than one key; each skips keys that already had a problem, so
one mistake is reported once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .values import seconds_text
from .walk import Walker


def lease_outlasts_sends(w: Walker) -> None:
    lease, timeout = "dispatch.lease", "http.timeout"
    if not w.ok(lease, timeout):
        return
    need = 3 * w.values[timeout]
    if w.values[lease] < need:
        given = w.origin[timeout].removeprefix("the default ")
        origin = "the default" if w.origin[timeout].startswith("the default ") else "set to"
        w.add(lease, f"{w.origin[lease]} is shorter than 3 × {timeout} = {seconds_text(need)} "
                     f"({timeout} is {origin} {given}): a send could outlive its lease, and "
                     "another daemon could take the row over and send it again (make "
                     f"{lease} at least {seconds_text(need)}, or {timeout} shorter)")


def backoff_max_covers_base(w: Walker) -> None:
    base, top = "retry.backoff.base", "retry.backoff.max"
    if w.ok(base, top) and w.values[top] < w.values[base]:
        w.add(top, f"{w.origin[top]} is shorter than {base} {w.origin[base]} "
                   "(max must be >= base)")


def app_credentials_fit_token_source(w: Walker) -> None:
    for name in w.names("apps"):
        p = f"apps.{name}"
        if not w.ok(f"{p}.token_source"):
            continue
        source = w.values[f"{p}.token_source"]
        secret_key = f"{p}.secret"
        if (source in ("stable", "legacy") and w.values.get(secret_key) is None
                and w.ok(secret_key, f"{secret_key}_file")):
            w.add(secret_key, f"missing (required for token_source {source!r}; "
                              "give secret or secret_file)")
        token_file = f"{p}.token_file"
        if source != "external" and w.values.get(token_file) is not None:
            w.add(token_file, f"{w.origin[token_file]} is not allowed with token_source "
                              f"{source!r} (token_file is only for token_source external)")


RULES: Final[tuple[Callable[[Walker], None], ...]] = (
    lease_outlasts_sends,
    backoff_max_covers_base,
    app_credentials_fit_token_source,
)


def check_rules(w: Walker) -> None:
    for rule in RULES:
        rule(w)
