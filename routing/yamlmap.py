"""YAML loading that remembers where each key and item stands, so errors can name the line.

Loading is strict where YAML is lenient: a key given twice in one mapping (at any depth) is
an error naming the line of the repetition, not a silent "the last one wins".
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from planr.errors import UsageError

Loc = tuple[str | int, ...]


class YamlError(UsageError):
    """The text is not acceptable YAML; ``problems`` holds one ``line N: ...`` per problem."""

    reason = "yaml"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _dotted(path: Loc) -> str:
    return ".".join(str(p) for p in path) or "(top)"


def _key_identity(key: yaml.Node, constructor: SafeConstructor) -> object:
    """What the key becomes in the loaded mapping (so ``1``/``0x1`` or ``yes``/``true`` are
    the same key, as they are once loaded); non-scalar keys never compare equal."""
    if not isinstance(key, yaml.ScalarNode):
        return key
    try:
        value: object = constructor.construct_object(key)
    except yaml.YAMLError:  # e.g. the merge key ``<<``, which is not a value of its own
        return (key.tag, key.value)
    return value


def load_with_lines(text: str) -> tuple[Any, dict[Loc, int]]:
    """Parse YAML; return the data and a map from each path (keys and indexes) to its line.

    Raises YamlError for a syntax error or for keys given twice in one mapping."""
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise YamlError([f"{where}: {problem}"]) from None
    lines: dict[Loc, int] = {}
    duplicates: list[str] = []
    constructor = SafeConstructor()

    def walk(n: yaml.Node, path: Loc) -> None:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            seen: set[object] = set()
            for key, value in n.value:
                child = (*path, str(key.value))
                line = key.start_mark.line + 1
                identity = _key_identity(key, constructor)
                if identity in seen:
                    duplicates.append(f"line {line}: {_dotted(child)}: key {str(key.value)!r} "
                                      "is given twice in this mapping; YAML would silently "
                                      "keep only the last one")
                seen.add(identity)
                lines[child] = line
                walk(value, child)
                lines[child] = line
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    if node is not None:
        walk(node, ())
    if duplicates:
        raise YamlError(duplicates)
    return data, lines


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the longest known prefix of ``loc``."""
    for end in range(len(loc), -1, -1):
        key = tuple(str(p) if isinstance(p, str) else p for p in loc[:end])
        if key in lines:
            return lines[key]
    return None
