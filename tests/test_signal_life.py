"""The pure rules of a signal's life (routing/lifecycle.py): versions apply in order whatever
order they arrive in; corrections may not loosen markings; withdrawal retracts from every
holder; a reused id is a conflict. Expected outcomes are written out by hand."""

from __future__ import annotations

import itertools

import pytest

from routing.lifecycle import (
    EventState,
    Markings,
    Verdict,
    after_routing,
    after_withdrawal,
    judge_signal,
    judge_withdrawal,
)

BASE = Markings("restreint", "H1", "amber", False, frozenset())


def _state(version: int = 1, **kw) -> EventState:
    s, _ = after_routing(None, event_id="e", agency="vsse", subject_id="P-1", version=version,
                         fingerprint=f"fp{version}", markings=BASE,
                         allowed={"tfl:brussel": "d1", "wg:salafism": "d2"})
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def test_a_first_publication_is_routed():
    assert judge_signal(None, "vsse", 1, "fp", BASE).verdict is Verdict.ROUTE


@pytest.mark.parametrize(("version", "fp", "verdict"), [
    (1, "fp1", Verdict.DUPLICATE),
    (1, "other", Verdict.CONFLICT),
    (2, "fp2", Verdict.ROUTE),
    (5, "fp5", Verdict.ROUTE),
])
def test_versions_after_the_first(version, fp, verdict):
    assert judge_signal(_state(1), "vsse", version, fp, BASE).verdict is verdict


def test_an_older_version_arriving_late_is_stale():
    assert judge_signal(_state(3), "vsse", 2, "fp2", BASE).verdict is Verdict.STALE


def test_another_agency_reusing_the_id_is_a_conflict():
    j = judge_signal(_state(1), "polfed", 2, "fp2", BASE)
    assert (j.verdict, j.detail) == (Verdict.CONFLICT, "agency")


@pytest.mark.parametrize(("change", "field"), [
    ({"classification": "unclassified"}, "classification"),
    ({"handling": "H0"}, "handling"),
    ({"tlp": "green"}, "tlp"),
    ({"local_sharing": True}, "local_sharing"),
])
def test_a_correction_may_not_loosen_a_marking(change, field):
    loose = Markings(**{**BASE.__dict__, **change})
    j = judge_signal(_state(1), "vsse", 2, "fp2", loose)
    assert (j.verdict, j.detail) == (Verdict.LOOSENED, field)


def test_a_correction_may_tighten_every_marking():
    strict = Markings("secret", "H2", "red", False, frozenset({"tfl:brussel"}))
    assert judge_signal(_state(1), "vsse", 2, "fp2", strict).verdict is Verdict.ROUTE


def test_named_recipients_may_only_shrink_once_named():
    named = _state(1, markings=Markings("restreint", "H2", "amber", False,
                                         frozenset({"tfl:brussel", "ftf-db"})))
    fewer = Markings("restreint", "H2", "amber", False, frozenset({"tfl:brussel"}))
    more = Markings("restreint", "H2", "amber", False, frozenset({"tfl:brussel", "ntf"}))
    assert judge_signal(named, "vsse", 2, "x", fewer).verdict is Verdict.ROUTE
    assert judge_signal(named, "vsse", 2, "x", more).detail == "named_recipients"


def test_a_correction_retracts_from_holders_no_longer_entitled():
    state, retract = after_routing(_state(1), event_id="e", agency="vsse", subject_id="P-1",
                                   version=2, fingerprint="fp2", markings=BASE,
                                   allowed={"tfl:brussel": "d1"})
    assert [h.recipient for h in retract] == ["wg:salafism"]
    assert {h.recipient: (h.version, h.active) for h in state.holdings.values()} == {
        "tfl:brussel": (2, True), "wg:salafism": (1, False)}


def test_withdrawal_retracts_from_every_holder_once():
    state, retract = after_withdrawal(_state(1), event_id="e", agency="vsse", version=1)
    assert sorted(h.recipient for h in retract) == ["tfl:brussel", "wg:salafism"]
    assert judge_withdrawal(state, "vsse", 1).verdict is Verdict.STALE
    assert judge_signal(state, "vsse", 2, "fp2", BASE).verdict is Verdict.STALE


def test_a_withdrawal_before_the_publication_keeps_it_from_ever_being_routed():
    state, retract = after_withdrawal(None, event_id="e", agency="vsse", version=1)
    assert retract == []
    assert judge_signal(state, "vsse", 1, "fp1", BASE).verdict is Verdict.STALE


def _replay(order: tuple[str, ...]) -> tuple[int, bool, set[str]]:
    """Apply publications v1..v3 (v2 drops the working group) and maybe a withdrawal."""
    allowed = {1: {"tfl:brussel": "d1", "wg:salafism": "d2"}, 2: {"tfl:brussel": "d1"},
               3: {"tfl:brussel": "d1"}}
    state: EventState | None = None
    for item in order:
        if item == "w":
            if judge_withdrawal(state, "vsse", 3).verdict is Verdict.WITHDRAW:
                state, _ = after_withdrawal(state, event_id="e", agency="vsse", version=3)
            continue
        v = int(item)
        if judge_signal(state, "vsse", v, f"fp{v}", BASE).verdict is Verdict.ROUTE:
            state, _ = after_routing(state, event_id="e", agency="vsse", subject_id="P-1",
                                     version=v, fingerprint=f"fp{v}", markings=BASE,
                                     allowed=allowed[v])
    assert state is not None
    return state.version, state.withdrawn, {h.recipient for h in state.holders()}


@pytest.mark.parametrize("order", list(itertools.permutations("123")))
def test_the_latest_version_wins_whatever_the_arrival_order(order):
    version, withdrawn, holders = _replay(order)
    assert version == 3
    assert not withdrawn
    # v1 may have reached the group first (arrived first), but v3 retracts it
    assert holders == {"tfl:brussel"}


@pytest.mark.parametrize("order", list(itertools.permutations("12w")))
def test_a_withdrawal_ends_with_no_holder_whatever_the_arrival_order(order):
    _version, withdrawn, holders = _replay(order)
    assert withdrawn
    assert holders == set()
