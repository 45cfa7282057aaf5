"""The JSON form of a signal, as agency back-ends submit it (docs/design.md).

Field names and enum spellings are the public contract; extra fields are rejected. Error
messages name the field and never echo the submitted value (it may be content).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from planr.domain import (
    Agency,
    Classification,
    FtfSituation,
    Handling,
    Reliability,
    SubjectKind,
    Tlp,
    tlp_to_avro,
)
from schemas.validation import (
    CountryCode,
    Domains,
    EventId,
    NamedRecipients,
    OcamAction,
    OcamBasis,
    OneToFour,
    Phenomena,
    Statuses,
    SubjectId,
    Summary,
    Version,
    check_location,
    check_occurred_at,
    check_owner_control,
    published_at_of,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Subject(_Strict):
    id: SubjectId
    kind: SubjectKind = SubjectKind.PERSON
    statuses: Statuses = Field(default_factory=list)


class Location(_Strict):
    municipality: str | None = None
    prison: str | None = None

    @model_validator(mode="after")
    def _exactly_one_known(self) -> Self:
        check_location(self.municipality, self.prison)
        return self


class Ftf(_Strict):
    situation: FtfSituation = FtfSituation.UNKNOWN
    country: CountryCode | None = None


class OcamDecision(_Strict):
    """OCAM's decision on the common database; the projector ignores it from other services."""

    action: OcamAction | None = None
    threat_level: OneToFour | None = None
    basis: OcamBasis | None = None


class SignalIn(_Strict):
    """A signal as submitted in JSON. Markings are required: nothing defaults to 'shareable'.

    The field rules are those of :mod:`schemas.validation`, shared with the check of Avro
    records. ``occurred_at`` is checked against the publication time: the one given in the
    validation context (``context={"published_at": t}``), else, for JSON text, now.
    """

    event_id: EventId = Field(default_factory=uuid.uuid4)
    agency: Agency | None = None
    occurred_at: AwareDatetime
    subject: Subject
    location: Location
    phenomena: Phenomena = Field(default_factory=list)
    domains: Domains = Field(default_factory=list)
    classification: Classification
    handling: Handling
    tlp: Tlp
    reliability: Reliability
    accuracy: OneToFour
    local_sharing: bool = False
    named_recipients: NamedRecipients = Field(default_factory=list)
    summary: Summary = ""
    ftf: Ftf | None = None
    ocam: OcamDecision | None = None
    version: Version = 1

    @field_validator("occurred_at")
    @classmethod
    def _not_after_publication(cls, v: datetime, info: ValidationInfo) -> datetime:
        published = published_at_of(info)
        if published is not None:
            check_occurred_at(v, published)
        return v

    @field_validator("named_recipients")
    @classmethod
    def _owner_control(cls, v: list[str], info: ValidationInfo) -> list[str]:
        handling, tlp = info.data.get("handling"), info.data.get("tlp")
        if handling is not None and tlp is not None:  # else their own error is reported
            check_owner_control(v, handling, tlp)
        return v

    def to_avro(self, agency: Agency, published_at: datetime | None = None) -> dict[str, Any]:
        """The Avro record of this signal, as published by ``agency``."""
        return {
            "event_id": str(self.event_id),
            "agency": agency.value,
            "occurred_at": self.occurred_at.astimezone(UTC),
            "published_at": published_at or datetime.now(UTC),
            "subject": {
                "id": self.subject.id,
                "kind": self.subject.kind.value,
                "statuses": [s.value for s in self.subject.statuses],
            },
            "location": {
                "municipality": self.location.municipality,
                "prison": self.location.prison,
            },
            "phenomena": [p.value for p in self.phenomena],
            "domains": [d.value for d in self.domains],
            "classification": self.classification.value,
            "handling": self.handling.value,
            "tlp": tlp_to_avro(self.tlp),
            "reliability": self.reliability.value,
            "accuracy": self.accuracy,
            "local_sharing": self.local_sharing,
            "named_recipients": list(self.named_recipients),
            "summary": self.summary,
            "ftf": (
                None
                if self.ftf is None
                else {"situation": self.ftf.situation.value, "country": self.ftf.country}
            ),
            "ocam": None if self.ocam is None else self.ocam.model_dump(),
            "version": self.version,
        }


def describe_errors(exc: ValidationError) -> str:
    """Field paths and messages only; never the submitted values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(signal)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
