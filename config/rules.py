"""Checks that involve more than one key, and the warnings about sound but risky settings.

Each check skips keys that already had a problem, so one mistake is reported once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Final

from .model import Config
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


# --------------------------------------------------------------------------- warnings

EXPOSED: Final = {
    "metrics.listen": "the metrics endpoint has no authentication (bind 127.0.0.1, or "
                      "firewall the port)",
    "web.listen": "WeChat's pushes should come through a TLS reverse proxy on this host "
                  "(bind 127.0.0.1 and let the proxy forward)",
    "console.listen": "reach the console through a TLS reverse proxy or an SSH tunnel, and "
                      "bind 127.0.0.1",
}


def is_loopback(host: str) -> bool | None:
    """True or False for an address; None for a host name (it could resolve anywhere)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def warnings_for(cfg: Config) -> tuple[str, ...]:
    found: list[str] = []
    servers = (("metrics.listen", cfg.metrics.listen, cfg.metrics.host),
               ("web.listen", cfg.web.listen, cfg.web.host),
               ("console.listen", cfg.console.listen, cfg.console.host))
    for key, listen, host in servers:
        loopback = True if host is None else is_loopback(host)
        if loopback is False:
            found.append(f"{key} {listen} is reachable from other hosts; {EXPOSED[key]}")
        elif loopback is None:
            found.append(f"{key} {listen} is not a loopback address, so it may be reachable "
                         f"from other hosts; {EXPOSED[key]}")
    console = cfg.console
    if console.listen is not None and not console.users:
        found.append("console.listen is set but console.users is empty: nobody can log in "
                     "(add a user with the password_hash `herald console-password` "
                     "prints, or set console.listen: null)")
    if (console.host is not None and is_loopback(console.host) is not True
            and not console.cookie_secure):
        found.append(f"console.listen {console.listen} is not loopback and "
                     "console.cookie_secure is false: the session cookie can travel without "
                     "TLS (serve the console over HTTPS and set console.cookie_secure: true)")
    return tuple(found)
