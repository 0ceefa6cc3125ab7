"""The two errors a configuration raises."""

from __future__ import annotations

import os
from collections.abc import Sequence


class ConfigError(Exception):
    """Everything wrong with a configuration, one "<key>: <what is wrong>" line each."""

    problems: list[str]
    path: str | None

    def __init__(self, problems: str | Sequence[str], path: str | os.PathLike[str] | None = None
                 ) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.path = None if path is None else os.fspath(path)
        # Both go to Exception.args so the error survives pickling (multiprocessing).
        super().__init__(self.problems, self.path)

    def __str__(self) -> str:
        where = f" in {self.path}" if self.path else ""
        return f"invalid configuration{where}:\n  - " + "\n  - ".join(self.problems)


class UnknownAppError(KeyError):
    """Raised by Config.app(); a KeyError whose str() is the plain message.

    (KeyError's own str() wraps the message in quotes, which reads badly in logs.)
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
