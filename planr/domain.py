"""The vocabulary of Plan R / T.E.R.: services, markings, statuses, recipients.

Spellings are the public contract (docs/design.md). Avro enum symbols cannot contain
``+``, so TLP ``amber+strict`` is the Avro symbol ``amber_strict``; :func:`tlp_to_avro` and
:func:`tlp_from_avro` convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from planr import territory
from planr.errors import UsageError


class Agency(StrEnum):
    OCAM = "ocam"
    VSSE = "vsse"
    SGRS = "sgrs"
    POLFED = "polfed"
    POLLOC = "polloc"
    AFFETR = "affetr"
    DGEPI = "dgepi"
    CTIF = "ctif"
    IBZ = "ibz"
    OE = "oe"
    NCCN = "nccn"
    DGSP = "dgsp"
    MP = "mp"
    COMREG = "comreg"


class Classification(StrEnum):
    """Law of 11 December 1998, plus the new 'restreint' level; ordered low to high."""

    UNCLASSIFIED = "unclassified"
    RESTREINT = "restreint"
    CONFIDENTIEL = "confidentiel"
    SECRET = "secret"  # noqa: S105 - a classification level, not a password
    TRES_SECRET = "tres_secret"  # noqa: S105

    @property
    def rank(self) -> int:
        return _CLASSIFICATION_ORDER.index(self)


_CLASSIFICATION_ORDER = list(Classification)


class Handling(StrEnum):
    H0 = "H0"
    H1 = "H1"
    H2 = "H2"
    H3 = "H3"


class Tlp(StrEnum):
    CLEAR = "clear"
    GREEN = "green"
    AMBER = "amber"
    AMBER_STRICT = "amber+strict"
    RED = "red"


class Reliability(StrEnum):
    A = "A"
    B = "B"
    C = "C"
    X = "X"


class SubjectKind(StrEnum):
    PERSON = "person"
    ORGANISATION = "organisation"


class Status(StrEnum):
    FTF = "FTF"
    HTF = "HTF"
    PH = "PH"
    EPV = "EPV"
    CTE = "CTE"
    RADICALISING = "RADICALISING"


#: The five statuses of the common database (T.E.R.).
DATABASE_STATUSES = frozenset({Status.FTF, Status.HTF, Status.PH, Status.EPV, Status.CTE})


class Phenomenon(StrEnum):
    SALAFISM = "salafism"
    RIGHT_WING = "right_wing"
    LEFT_WING = "left_wing"
    ASIA_MINOR_NORTH_CAUCASUS = "asia_minor_north_caucasus"
    OTHER = "other"


class Domain(StrEnum):
    INTERNET = "internet"
    PRISON = "prison"
    MEDIA = "media"
    PREVENTION = "prevention"
    PREACHERS = "preachers"
    MOSQUES = "mosques"
    ASYLUM_MIGRATION = "asylum_migration"


class FtfSituation(StrEnum):
    IN_CONFLICT_ZONE = "in_conflict_zone"
    RETURNED = "returned"
    PREVENTED = "prevented"
    DECEASED = "deceased"
    UNKNOWN = "unknown"


class WorkingGroup(StrEnum):
    INTERNET = "internet"
    PRISONS = "prisons"
    MEDIA = "media"
    PREVENTION = "prevention"
    SALAFISM = "salafism"
    RIGHT_WING = "right_wing"
    LEFT_WING = "left_wing"
    ASIA_MINOR_NORTH_CAUCASUS = "asia_minor_north_caucasus"
    PREACHERS = "preachers"
    MOSQUES = "mosques"
    ASYLUM_MIGRATION = "asylum_migration"
    FTF = "ftf"


class RecipientClass(StrEnum):
    TFL = "tfl"
    WG = "wg"
    CSILR = "csilr"
    FTF_DB = "ftf-db"
    NTF = "ntf"


def tlp_to_avro(tlp: Tlp) -> str:
    return tlp.value.replace("+", "_")


def tlp_from_avro(symbol: str) -> Tlp:
    return Tlp(symbol.replace("_", "+"))


@dataclass(frozen=True, slots=True, order=True)
class Recipient:
    """A recipient id: ``tfl:<arrondissement>``, ``wg:<id>``, ``csilr:<REFNIS>``, ``ftf-db``
    or ``ntf``."""

    cls: RecipientClass
    key: str | None = None

    def __str__(self) -> str:
        return self.cls.value if self.key is None else f"{self.cls.value}:{self.key}"

    @classmethod
    def parse(cls, text: str) -> Recipient:
        """Parse and check a recipient id against the reference data; UsageError if unknown."""
        name, _, key = text.partition(":")
        try:
            rclass = RecipientClass(name)
        except ValueError:
            raise UsageError(f"unknown recipient class in recipient id {text!r}") from None
        if rclass in (RecipientClass.FTF_DB, RecipientClass.NTF):
            if key:
                raise UsageError(f"recipient {name!r} takes no ':' part")
            return cls(rclass)
        valid = {
            RecipientClass.TFL: territory.arrondissement_ids(),
            RecipientClass.WG: tuple(w.value for w in WorkingGroup),
            RecipientClass.CSILR: territory.municipality_ids(),
        }[rclass]
        if key not in valid:
            raise UsageError(f"unknown {name} id in recipient id {text!r}")
        return cls(rclass, key)


@cache
def all_recipients() -> tuple[Recipient, ...]:
    """Every recipient of the bus: 12 TFL, 12 WG, 565 CSIL R, the projector and the NTF."""
    return (
        *(Recipient(RecipientClass.TFL, a) for a in territory.arrondissement_ids()),
        *(Recipient(RecipientClass.WG, w.value) for w in WorkingGroup),
        *(Recipient(RecipientClass.CSILR, m) for m in territory.municipality_ids()),
        Recipient(RecipientClass.FTF_DB),
        Recipient(RecipientClass.NTF),
    )
