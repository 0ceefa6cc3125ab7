"""Reading a secret from a file (`secret_file:` and the other `*_file` keys)."""

from __future__ import annotations

import os
from pathlib import Path

from .values import Context, Invalid

# What systemd/herald-web.service's SetCredential= lines put in a credential whose
# LoadCredential= file is missing (so a console-only set-up starts without push files).
MISSING_MARKER = "herald-credential-file-missing"


def read_secret_file(value: object, ctx: Context) -> tuple[str, Path]:
    """The stripped text of the file `value` names, and where it was found.

    A relative name is looked up in $CREDENTIALS_DIRECTORY first (systemd's
    LoadCredential= puts secrets there), then in the config file's folder. Raises
    Invalid; no reason ever quotes the file's content.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise Invalid("is not a file path")
    relative = Path(str(value).strip())
    looked: list[Path] = []
    target = relative
    if not relative.is_absolute():
        credentials = ctx.env.get("CREDENTIALS_DIRECTORY")
        target = ctx.base_dir / relative
        if credentials:
            candidate = Path(credentials) / relative
            if candidate.is_file():
                target = candidate
            else:
                looked.append(candidate)
    looked.append(target)
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        raise Invalid(f"not found (looked for {' and '.join(str(p) for p in looked)})") from None
    except OSError as error:
        raise Invalid(f"cannot be read ({target}: {error.strerror})") from None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        # Not the decoder's message: it quotes the offending byte of the secret.
        raise Invalid(f"is not UTF-8 text ({target})") from None
    if not text:
        raise Invalid(f"is empty ({target})")
    if text == MISSING_MARKER:
        raise Invalid(f"is missing: systemd found no file for the credential {relative} "
                      f"({target} holds the unit's placeholder); create the file the "
                      "unit's LoadCredential= line names")
    return text, target
