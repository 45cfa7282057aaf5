"""The need-to-know policy file: its schema, validation and version.

The policy is data (``routing/policy.yaml``), not code. Semantics, as in Cedar and OPA:

- default deny: a recipient gets a signal only if a ``permit`` rule matches;
- a matching ``forbid`` overrides every ``permit``;
- every rule has an id and a one-line description; a decision names the rule(s) that decided;
- the version is a content hash of the parsed policy, carried by every decision and delivery.

Loading rejects keys given twice in a mapping, unknown keys, recipient classes, enum values,
municipality and arrondissement ids, empty lists (in ``recipients``, ``except`` and every
list-valued condition), and rules that can never match (``routing/satisfiable.py``), and
names the line of the file where the problem is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from planr import territory
from planr.domain import (
    Agency,
    Classification,
    Domain,
    Handling,
    Phenomenon,
    Recipient,
    RecipientClass,
    Reliability,
    Status,
    SubjectKind,
    Tlp,
    WorkingGroup,
)
from planr.errors import PolicyError, UsageError
from routing.jib import JibPolicy
from routing.satisfiable import never_matching
from routing.yamlmap import Loc, YamlError, line_of, load_with_lines
from schemas import AVRO_DIR
from schemas.codec import load_schema_file

#: The top-level fields of a signal, from its schema (the source of truth).
SIGNAL_FIELDS = tuple(f["name"] for f in load_schema_file(AVRO_DIR / "signal.avsc")["fields"])
AGGREGATE = "aggregate"

OneLine = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\n]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Which candidate scopes make sense for each recipient class.
_SCOPES: dict[RecipientClass, frozenset[str]] = {
    RecipientClass.TFL: frozenset({"arrondissement", "all"}),
    RecipientClass.WG: frozenset({"remit", "all"}),
    RecipientClass.CSILR: frozenset({"municipality", "arrondissement", "all"}),
    RecipientClass.FTF_DB: frozenset({"all"}),
    RecipientClass.NTF: frozenset({"all"}),
}


class ClassSpec(_Strict):
    """How a recipient class takes part: which of its recipients are candidates, which view."""

    description: OneLine
    candidates: Literal["arrondissement", "municipality", "remit", "all"]
    view: str


class Remit(_Strict):
    """What a working group works on; a signal matching any listed value is in its remit."""

    phenomena: list[Phenomenon] = []
    domains: list[Domain] = []
    statuses: list[Status] = []


_CONDITION_LISTS = ("handling", "tlp", "reliability", "subject_kind", "statuses_any",
                    "phenomena_any", "domains_any", "agency", "location_arrondissement",
                    "location_municipality", "location_kind")


class Conditions(_Strict):
    """All given conditions must hold for a rule to match (an empty set always matches)."""

    classification_at_most: Classification | None = None
    classification_above: Classification | None = None
    handling: list[Handling] | None = None
    tlp: list[Tlp] | None = None
    reliability: list[Reliability] | None = None
    accuracy_at_most: int | None = Field(default=None, ge=1, le=4)
    local_sharing: bool | None = None
    subject_kind: list[SubjectKind] | None = None
    statuses_any: list[Status] | None = None
    phenomena_any: list[Phenomenon] | None = None
    domains_any: list[Domain] | None = None
    agency: list[Agency] | None = None
    location_arrondissement: list[str] | None = None
    location_municipality: list[str] | None = None
    location_kind: list[Literal["municipality", "prison"]] | None = None
    ocam_decision: bool | None = None
    territory: Literal["arrondissement", "municipality"] | None = None
    remit: bool | None = None
    named: bool | None = None

    @field_validator(*_CONDITION_LISTS)
    @classmethod
    def _not_empty(cls, v: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if v is not None and not v:
            raise ValueError(f"an empty list matches no signal: list the {info.field_name} "
                             "that match, or omit the condition")
        return v

    @field_validator("location_arrondissement")
    @classmethod
    def _known_arrondissements(cls, v: list[str] | None) -> list[str] | None:
        for a in v or []:
            if a not in territory.arrondissement_ids():
                raise ValueError(f"unknown arrondissement id {a!r}")
        return v

    @field_validator("location_municipality")
    @classmethod
    def _known_municipalities(cls, v: list[str] | None) -> list[str] | None:
        for m in v or []:
            if not territory.is_municipality(m):
                raise ValueError(f"unknown municipality REFNIS code {m!r}")
        return v


def _check_targets(v: list[str] | None, info: ValidationInfo) -> list[str] | None:
    if v is not None and not v:
        raise ValueError("an empty list names no recipient: omit `recipients` to mean every "
                         "recipient" if info.field_name == "recipients" else
                         "an empty list excludes no one: omit `except`")
    for t in v or []:
        if t in {c.value for c in RecipientClass}:
            continue
        try:
            Recipient.parse(t)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
    return v


class Rule(_Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    effect: Literal["permit", "forbid"]
    description: OneLine
    recipients: list[str] | None = Field(
        default=None, description="Recipient classes or recipient ids; omitted means all."
    )
    except_: list[str] = Field(default=[], alias="except")
    when: Conditions = Conditions()

    _targets = field_validator("recipients", "except_")(_check_targets)


class Statistics(_Strict):
    """How figures are published: counts below ``ntf_threshold`` are never shown to the NTF
    (zeros are shown, so ``<2`` would mean exactly 1: the least useful threshold is 3)."""

    ntf_threshold: int = Field(default=5, ge=3, le=1000)


class PolicyDocument(_Strict):
    name: OneLine
    description: str = ""
    classes: dict[RecipientClass, ClassSpec]
    working_groups: dict[WorkingGroup, Remit]
    views: dict[str, list[str] | Literal["aggregate"]]
    rules: list[Rule]
    statistics: Statistics = Statistics()
    #: Who receives the Joint Information Box's proposals and decisions (routing/jib.py).
    jib: JibPolicy | None = None

    def _class_errors(self) -> list[tuple[Loc, str]]:
        errors: list[tuple[Loc, str]] = []
        for cls_, spec in self.classes.items():
            if spec.candidates not in _SCOPES[cls_]:
                errors.append((("classes", cls_.value, "candidates"),
                               f"{cls_.value} candidates can be {sorted(_SCOPES[cls_])}"))
            if spec.view not in self.views:
                errors.append((("classes", cls_.value, "view"),
                               f"view {spec.view!r} is not defined"))
        return errors

    def cross_reference_errors(self) -> list[tuple[Loc, str]]:
        """Checks that span entries, each error with its place in the file: missing classes
        or groups, view fields, undefined views, duplicated or reserved rule ids."""
        errors: list[tuple[Loc, str]] = []
        missing = [c.value for c in RecipientClass if c not in self.classes]
        if missing:
            errors.append((("classes",), f"missing recipient classes {missing}"))
        missing = [w.value for w in WorkingGroup if w not in self.working_groups]
        if missing:
            errors.append((("working_groups",), f"missing groups {missing}"))
        for name, fields in self.views.items():
            if fields == AGGREGATE:
                continue
            for i, f in enumerate(fields):
                if f not in SIGNAL_FIELDS:
                    errors.append((("views", name, i),
                                   f"view {name!r}: {f!r} is not a field of a signal"))
            if len(set(fields)) != len(fields):
                errors.append((("views", name), f"view {name!r} lists a field twice"))
        errors.extend(self._class_errors())
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.id == "default-deny":
                errors.append((("rules", i, "id"), "rule id 'default-deny' is reserved"))
            elif rule.id in seen:
                errors.append((("rules", i, "id"), f"rule id {rule.id!r} is used twice"))
            seen.add(rule.id)
        if self.jib is not None:
            errors.extend(self.jib.errors())
        return errors


class Policy:
    """A validated policy document with its version (content hash)."""

    def __init__(
        self,
        document: PolicyDocument,
        version: str,
        source: str = "",
        lines: dict[Loc, int] | None = None,
    ) -> None:
        self.document = document
        self.version = version
        self.source = source
        self.lines = lines or {}

    def where(self, *loc: str | int) -> str:
        """``<source>: line N`` of a place in the file, for error messages."""
        line = line_of(self.lines, loc)
        return f"{self.source}: line {line if line is not None else '?'}"

    @property
    def rules(self) -> list[Rule]:
        return self.document.rules

    @property
    def ntf_threshold(self) -> int:
        return self.document.statistics.ntf_threshold

    @classmethod
    def from_text(cls, text: str, source: str = "<policy>") -> Policy:
        try:
            data, lines = load_with_lines(text)
        except YamlError as exc:
            raise PolicyError("\n".join(f"{source}: {p}" for p in exc.problems)) from None
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: line 1: the policy must be a mapping")
        try:
            doc = PolicyDocument.model_validate(data)
        except ValidationError as exc:
            raise PolicyError(_describe(exc, lines, source)) from None
        problems = doc.cross_reference_errors() or never_matching(
            doc.rules, {w.value: remit for w, remit in doc.working_groups.items()})
        if problems:
            raise PolicyError("\n".join(
                f"{source}: line {line_of(lines, loc) or '?'}: "
                f"{'.'.join(str(p) for p in loc)}: {msg}"
                for loc, msg in problems
            ))
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        version = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return cls(doc, version, source, lines)

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read policy ({exc.strerror})") from None
        return cls.from_text(text, str(path))


def _describe(exc: ValidationError, lines: dict[Any, int], source: str) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        loc = tuple("except" if p == "except_" else p for p in loc)
        line = line_of(lines, loc)
        where = f"line {line}" if line is not None else "line ?"
        path = ".".join(str(p) for p in loc) or "(top)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{source}: {where}: {path}: {msg}")
    return "\n".join(parts)
