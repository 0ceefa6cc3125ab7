"""${VAR} and ${VAR:-default} in string values, as in the shell; $${ is a literal ${."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .values import EnvStr

# ${NAME} or ${NAME:-default}; $${ is an escaped literal "${"; a lone "${" is unterminated.
_REFERENCE: Final = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_REFERENCE_BODY: Final = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?",
                                    re.DOTALL)


@dataclass(frozen=True, slots=True)
class Unresolved:
    message: str
    unset: bool  # an unset variable (the deferrable kind), not a malformed reference


def interpolate(value: object, env: Mapping[str, str], *, hidden: bool,
                unset_hint: str | None = None) -> tuple[object, list[Unresolved]]:
    """`value` with references expanded (an EnvStr if any were), and what went wrong.

    hidden: the text of a malformed reference is not quoted (under a secret it may hold
    the secret as its default). unset_hint replaces the usual advice for an unset variable.
    """
    if not isinstance(value, str) or "${" not in value:
        return value, []
    problems: list[Unresolved] = []
    substituted = False

    def expand(match: re.Match[str]) -> str:
        nonlocal substituted
        if match.group(0) == "$${":
            return "${"
        body = match.group("body")
        if body is None:
            problems.append(Unresolved("unterminated ${ (write ${NAME} or ${NAME:-default}; "
                                       "$${ for a literal ${)", unset=False))
            return ""
        reference = _REFERENCE_BODY.fullmatch(body)
        if reference is None or "${" in (reference.group("default") or ""):
            quoted = "" if hidden else " " + repr("${" + body + "}")
            problems.append(Unresolved(
                f"malformed reference{quoted} (write ${{NAME}} or ${{NAME:-default}}, NAME made "
                "of letters, digits and _; nesting is not supported)", unset=False))
            return ""
        substituted = True
        name, default = reference.group("name"), reference.group("default")
        current = env.get(name)
        if default is not None:
            return current if current else default
        if current is None:
            hint = unset_hint or f"set it, or write ${{{name}:-default}}"
            problems.append(Unresolved(f"environment variable {name} is not set ({hint})",
                                       unset=True))
            return ""
        return current

    result = _REFERENCE.sub(expand, value)
    return (EnvStr(result) if substituted else result), problems
