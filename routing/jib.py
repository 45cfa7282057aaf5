"""The Joint Information Box (JIB) part of the need-to-know policy: who receives its proposals
and decisions.

The ``jib:`` section of the policy file holds its own rules, with the semantics of the signal
rules (default deny, a matching ``forbid`` overrides every ``permit``, each decision names its
rule). Its candidates are roles, resolved per proposal:

- ``panel``: the services whose consent the proposal needs (the services sitting in the local
  taskforce of its arrondissement, from the panels file);
- ``proposer``: the service or local taskforce that proposed it.

A rule applies to the ``messages`` it lists (``proposal``, ``decision``) and the roles in its
``recipients``, and matches when all of its ``when`` conditions hold (``action``, ``outcome``,
``proposer``: the proposer's class, ``tfl`` or ``service``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from planr.parties import is_tfl

DEFAULT_DENY = "default-deny"
Message = Literal["proposal", "decision"]
Role = Literal["panel", "proposer"]
Action = Literal["insert", "remove"]
Outcome = Literal["adopted", "rejected", "expired"]
ProposerClass = Literal["tfl", "service"]
Loc = tuple[str | int, ...]

_OneLine = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\n]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_empty(v: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
    if v is not None and not v:
        raise ValueError(f"an empty list matches nothing: list the {info.field_name} that "
                         "match, or omit the key")
    return v


class JibConditions(_Strict):
    """All given conditions must hold (none: the rule always matches)."""

    action: list[Action] | None = None
    outcome: list[Outcome] | None = None
    proposer: list[ProposerClass] | None = None

    _lists = field_validator("action", "outcome", "proposer")(_not_empty)


class JibRule(_Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    effect: Literal["permit", "forbid"]
    description: _OneLine
    messages: list[Message]
    recipients: list[Role]
    when: JibConditions = JibConditions()

    _lists = field_validator("messages", "recipients")(_not_empty)

    def matches(self, message: str, roles: set[str], facts: dict[str, str | None]) -> bool:
        if message not in self.messages or not roles & set(self.recipients):
            return False
        for key in ("action", "outcome", "proposer"):
            allowed = getattr(self.when, key)
            if allowed is not None and facts[key] not in allowed:
                return False
        return True


class JibPolicy(_Strict):
    """The ``jib:`` section of the policy file."""

    description: str = ""
    rules: list[JibRule]

    def errors(self) -> list[tuple[Loc, str]]:
        """Rule ids used twice or reserved; rules that can never match."""
        errors: list[tuple[Loc, str]] = []
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.id == DEFAULT_DENY:
                errors.append((("jib", "rules", i, "id"), f"rule id {DEFAULT_DENY!r} is reserved"))
            elif rule.id in seen:
                errors.append((("jib", "rules", i, "id"), f"rule id {rule.id!r} is used twice"))
            seen.add(rule.id)
            if rule.when.outcome is not None and "decision" not in rule.messages:
                errors.append((("jib", "rules", i, "when", "outcome"),
                               "only decisions have an outcome: this rule can never match"))
        return errors


@dataclass(frozen=True, slots=True)
class JibRoute:
    """The decision for one candidate: allowed or not, the deciding rule, every matching rule
    of the winning kind."""

    recipient: str
    allowed: bool
    rule: str
    rules: tuple[str, ...]


class JibRouting:
    """Evaluates the ``jib:`` section; without one, every candidate is denied (default deny)."""

    def __init__(self, policy: JibPolicy | None, version: str) -> None:
        self.rules: Sequence[JibRule] = policy.rules if policy is not None else ()
        self.version = version

    @staticmethod
    def candidates(proposer: str, panel: Sequence[str]) -> dict[str, set[str]]:
        """Each candidate recipient with its roles: the panel in order, then the proposer."""
        out: dict[str, set[str]] = {service: {"panel"} for service in panel}
        out.setdefault(proposer, set()).add("proposer")
        return out

    def decide(
        self,
        message: Message,
        *,
        proposer: str,
        panel: Sequence[str],
        action: str,
        outcome: str | None = None,
    ) -> list[JibRoute]:
        facts: dict[str, str | None] = {
            "action": action, "outcome": outcome,
            "proposer": "tfl" if is_tfl(proposer) else "service",
        }
        routes = []
        for recipient, roles in self.candidates(proposer, panel).items():
            matching = [r for r in self.rules if r.matches(message, roles, facts)]
            forbids = tuple(r.id for r in matching if r.effect == "forbid")
            permits = tuple(r.id for r in matching if r.effect == "permit")
            if forbids:
                routes.append(JibRoute(recipient, False, forbids[0], forbids))
            elif permits:
                routes.append(JibRoute(recipient, True, permits[0], permits))
            else:
                routes.append(JibRoute(recipient, False, DEFAULT_DENY, (DEFAULT_DENY,)))
        return routes
