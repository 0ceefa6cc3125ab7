"""Entry points: config.yaml (strict YAML) or a mapping built in code, to one Config."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from strict_yaml import StrictLoader

from .model import Config, ConfigError
from .rules import check_rules, warnings_for
from .schema import SCHEMA
from .values import Context, shown
from .walk import Walker


def config_from_dict(data: Mapping[str, Any], *, base_dir: Path, env: Mapping[str, str],
                     path: Path | None = None, strict_secrets: bool = True) -> Config:
    """Validate already-parsed settings into a Config; ConfigError lists every problem.

    Relative paths (sqlite file, templates, secret_file, token_file) resolve against
    `base_dir`, normally the config file's folder. strict_secrets=False: a problem with a
    credential (an app's secret, an appid from an unset variable, push and SMS secrets)
    is no error; that value is None and the problem waits in Config.unresolved, for
    verbs that only touch the database (Config.require() raises it later).
    """
    if not isinstance(data, Mapping):
        raise ConfigError([f"(top level): {shown(data)} is not a mapping of settings "
                           f"(allowed keys: {', '.join(SCHEMA.root.allowed)})"], path)
    walker = Walker(SCHEMA, Context(Path(base_dir).resolve(), env),
                    strict_secrets=strict_secrets)
    walker.walk(data)
    check_rules(walker)
    if walker.problems:
        raise ConfigError(walker.problems, path)
    config = Config(path=path, **walker.build(),
                    unresolved=MappingProxyType(dict(walker.unresolved)))
    return dataclasses.replace(config, warnings=warnings_for(config))


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None, *,
                strict_secrets: bool = True) -> Config:
    """Read and validate the config file.

    `path` None means $HERALD_CONFIG, else config.yaml in the current directory; `env`
    defaults to os.environ and feeds ${VAR}, HERALD_DATABASE and CREDENTIALS_DIRECTORY.
    strict_secrets: as for config_from_dict.
    """
    environment: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        path = environment.get("HERALD_CONFIG") or "config.yaml"
    file = Path(path).resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file {file} not found"], file) from None
    except UnicodeDecodeError:
        raise ConfigError([f"config file {file} is not UTF-8 text"], file) from None
    except OSError as error:
        raise ConfigError([f"config file {file} cannot be read: {error.strerror}"], file) from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: no object tags
    except yaml.MarkedYAMLError as error:
        # Only line, column and problem: PyYAML's full message quotes the offending line,
        # which may hold a secret. `from None` keeps that text out of tracebacks too.
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ConfigError([f"{where}: YAML syntax error: {error.problem or error.context}"],
                          file) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"YAML error: {type(error).__name__}"], file) from None
    return config_from_dict({} if data is None else data, base_dir=file.parent, env=environment,
                            path=file, strict_secrets=strict_secrets)
