"""YAML read from a file a person wrote, as Herald reads it: safe tags only, and a
mapping that names a key twice is refused (PyYAML lets the last one win, so a second
`order_status:` or a repeated setting would silently replace the first). Used for
config.yaml and templates.yaml alike.
"""

from __future__ import annotations

from typing import Any

import yaml


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (the same silent-typo hazard as an
    unknown key)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            # `<<` merges are meant to be overridden; only keys written out count.
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node,
                                                                           yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable; SafeLoader reports it itself
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line numbers of every mapping key, by path, for error messages."""
    out: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = str(k.value)
                out[path + (key,)] = k.start_mark.line + 1
                if len(path) < 4:
                    walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                out.setdefault(path + (str(i),), v.start_mark.line + 1)
                if len(path) < 4:
                    walk(v, path + (str(i),))

    if root is not None:
        walk(root, ())
    return out


__all__ = ["StrictLoader", "key_lines"]
