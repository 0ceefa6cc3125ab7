"""The declarations of model.py as one tree: each key, section and names mapping with its
dotted path, in the order the classes list them (which is the order of config.yaml and of
every "allowed:" list). Walker, reload's tables, config.yaml and the reference read this.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Final, Union, get_args, get_origin, get_type_hints

from .model import Config, JobConfig
from .spec import ENTRY, Decl, Jobs, Key, Names, Schema, Section, Sighup


def frozen_mapping(**items: Any) -> types.MappingProxyType[str, Any]:
    return types.MappingProxyType(items)


def _declared(cls: type) -> Iterator[tuple[str, Any, object]]:
    """(field name, type, declaration) for each field of `cls` that declares a key."""
    hints = get_type_hints(cls, include_extras=True)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if get_origin(hint) is not Annotated:
            continue  # not a key: an entry's name, a listener's host, the file's path
        base, *extras = get_args(hint)
        found = [e for e in extras if isinstance(e, Key | Section | Names | Jobs)]
        if len(found) != 1:
            raise TypeError(f"{cls.__name__}.{item.name}: one declaration, not {len(found)}")
        yield item.name, base, found[0]


def _settings_class(base: Any) -> tuple[type, bool]:
    """The dataclass a section field holds, and whether it may be None."""
    args = get_args(base) if get_origin(base) in (Union, types.UnionType) else (base,)
    classes = [a for a in args if a is not type(None)]
    if len(classes) != 1 or not isinstance(classes[0], type) or not dataclasses.is_dataclass(
            classes[0]):
        raise TypeError(f"a section holds one dataclass, not {base!r}")
    return classes[0], len(classes) < len(args)


def declarations(cls: type, prefix: str = "", reload: Sighup | None = None) -> Iterator[Decl]:
    for name, base, decl in _declared(cls):
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(decl, Key):
            bound = decl.bind(path, reload)
            if bound.reload is None:
                raise TypeError(f"{path}: say what SIGHUP does with it (reload=)")
            yield bound
        elif isinstance(decl, Section):
            target, optional = _settings_class(base)
            here = decl.reload or reload
            yield dataclasses.replace(decl, path=path, reload=here, optional=optional,
                                      build=target)
            yield from declarations(target, path, here)
        elif isinstance(decl, Names):
            if get_origin(base) is not Mapping:
                raise TypeError(f"{path}: names() goes on a Mapping[str, <dataclass>]")
            entry = get_args(base)[1]
            here = decl.reload or reload
            yield dataclasses.replace(decl, path=path, reload=here)
            yield Section(decl.entry_help, reload=here, build=entry, path=f"{path}.{ENTRY}")
            yield from declarations(entry, f"{path}.{ENTRY}", here)
        else:
            assert isinstance(decl, Jobs)
            here = decl.reload or reload
            yield Section(decl.help, reload=here, build=frozen_mapping, path=path)
            for job in decl.jobs:
                mine = job.reload or here
                yield Section(job.help, reload=mine, build=JobConfig, path=f"{path}.{job.name}")
                yield Key(decl.every, job.every, f"how often: {job.help}", reload=mine,
                          path=f"{path}.{job.name}.every")


DECLARATIONS: Final[tuple[Decl, ...]] = tuple(declarations(Config))

SCHEMA: Final = Schema(dict, *DECLARATIONS)
