"""The panels of the JIB: per judicial arrondissement, the services whose consent a proposal
needs (the services sitting in that local taskforce). A reviewed data file,
``consumers/jib/panels.yaml`` (``planr jib consensus --panels``), not code and not the
proposer's choice.

Loading is strict and every problem names its line: unknown keys, arrondissements and
services, an arrondissement missing or given twice, an empty panel, a service listed twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from planr import territory
from planr.domain import Agency
from planr.errors import UsageError
from routing.yamlmap import YamlError, line_of, load_with_lines

DEFAULT_PANELS_FILE = Path(__file__).resolve().parent / "panels.yaml"


class _PanelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    panels: dict[str, list[Agency]]


@dataclass(frozen=True)
class Panels:
    """The services of each arrondissement's panel, in the file's order."""

    panels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "<memory>"

    def of(self, arrondissement: str) -> tuple[str, ...]:
        """The panel of an arrondissement; UsageError for an unknown one."""
        try:
            return self.panels[arrondissement]
        except KeyError:
            raise UsageError("no panel for this arrondissement") from None

    @classmethod
    def from_text(cls, text: str, source: str = "<panels>") -> Panels:
        try:
            data, lines = load_with_lines(text)
        except YamlError as exc:
            raise UsageError("\n".join(f"{source}: {p}" for p in exc.problems)) from None

        def at(loc: tuple[str | int, ...], message: str) -> str:
            where = ".".join(str(p) for p in loc) or "(top)"
            return f"{source}: line {line_of(lines, loc) or '?'}: {where}: {message}"

        if not isinstance(data, dict):
            raise UsageError(at((), "the panels file must be a mapping"))
        try:
            doc = _PanelsFile.model_validate(data)
        except ValidationError as exc:
            raise UsageError("\n".join(
                at(tuple(e["loc"]), str(e["msg"]))
                for e in exc.errors(include_url=False, include_input=False))) from None
        problems = _problems(doc, data)
        if problems:
            raise UsageError("\n".join(at(loc, msg) for loc, msg in problems))
        panels = {a: tuple(s.value for s in services) for a, services in doc.panels.items()}
        return cls(panels, source)

    @classmethod
    def load(cls, path: Path) -> Panels:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the panels file ({exc.strerror})") from None
        return cls.from_text(text, str(path))


def _problems(doc: _PanelsFile, data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    known = territory.arrondissement_ids()
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for arrondissement, services in doc.panels.items():
        loc: tuple[str | int, ...] = ("panels", arrondissement)
        if arrondissement not in known:
            problems.append((loc, "not a judicial arrondissement id"))
        if not services:
            problems.append((loc, "a panel needs at least one service"))
        for i, service in enumerate(services):
            if service in services[:i]:
                problems.append(((*loc, i), f"service {service.value} is listed twice"))
    missing = [a for a in known if a not in doc.panels]
    if missing and isinstance(data, dict):
        problems.append((("panels",), "missing arrondissements: " + ", ".join(missing)))
    return problems
