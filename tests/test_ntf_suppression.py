"""The NTF's month tables (pure logic): no entry below the threshold is shown, and no
suppressed entry can be worked out from what is shown, checked on random tables against
independent solvers (tests/ntf_oracle.py); the months and facts helpers; the policy's
``statistics`` section."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from consumers.ntf.months import fact_error, is_closed, month_end
from consumers.ntf.suppression import TOTAL, Status, Table, entries, is_exposed, protect
from planr.errors import PolicyError
from routing import DEFAULT_POLICY
from routing.policy import Policy
from tests.ntf_oracle import determined_by_totals, other_value_exists

Counts = dict[tuple[str, str], int]


def random_counts(rng: random.Random) -> Counts:
    """A small table: many zeros and small counts, some large ones."""
    rows = [f"arr{i}" for i in range(rng.randint(1, 4))]
    cols = [f"ph{j}" for j in range(rng.randint(1, 4))]
    out: Counts = {}
    for r in rows:
        for c in cols:
            kind = rng.random()
            out[(r, c)] = 0 if kind < 0.3 else rng.randint(1, 4) if kind < 0.65 else \
                rng.randint(5, 25)
    return out


def shown_of(table: Table) -> dict[tuple[str, str], str]:
    return {(c.arrondissement, c.phenomenon): c.shown(table.threshold) for c in table.cells}


def test_random_tables_show_nothing_below_the_threshold_and_give_no_suppressed_entry_away():
    rng = random.Random(20261129)
    started, checked, withheld, suppressed = time.monotonic(), 0, 0, 0
    while checked < 200 and time.monotonic() - started < 4:
        counts, t = random_counts(rng), rng.randint(3, 6)
        table = protect(counts, t)
        checked += 1
        if table.withheld:
            withheld += 1
            continue
        values = {(c.arrondissement, c.phenomenon): c.count for c in table.cells}
        shown = shown_of(table)
        if not any(counts.values()):
            assert values == {}
            continue
        # every non-zero cell is in the table, and every total is the sum of its line
        assert {k for k, v in counts.items() if v} == {k for k in values if TOTAL not in k}
        assert values[(TOTAL, TOTAL)] == sum(counts.values())
        for key, mark in shown.items():
            if mark.isdigit():
                assert int(mark) == values[key] >= t, "a count below the threshold is shown"
            else:
                assert mark in {f"<{t}", "x"}
                assert (mark == f"<{t}") == (values[key] < t)
        hidden = {k for k, m in shown.items() if not m.isdigit()}
        suppressed += len(hidden)
        assert determined_by_totals(values, hidden) == set(), counts
        for key in hidden:
            assert other_value_exists(values, shown, t, key), (counts, t, key)
    assert checked >= 100, "too few tables checked in the time allowed"
    assert suppressed > checked, "the tables exercise suppression"
    assert withheld < checked / 4


def test_the_verifier_agrees_with_an_independent_search_on_arbitrary_suppressions():
    rng = random.Random(7)
    agreed = exposed_seen = 0
    while agreed < 150:
        counts, t = random_counts(rng), rng.randint(3, 6)
        values = entries(counts)
        status = {k: Status.PRIMARY if v < t else
                  Status.SECONDARY if rng.random() < 0.35 else Status.SHOWN
                  for k, v in values.items()}
        shown = {k: f"<{t}" if s is Status.PRIMARY else "x" if s is Status.SECONDARY
                 else str(values[k]) for k, s in status.items()}
        for key, st in status.items():
            if st is Status.SHOWN:
                continue
            pinned = is_exposed(key, values, status, t)
            assert pinned == (not other_value_exists(values, shown, t, key)), (counts, key)
            exposed_seen += pinned
            agreed += 1
    assert exposed_seen > 10, "the comparison covers exposed entries too"


def test_one_report_in_a_cell_is_shown_below_the_threshold_and_not_given_away_by_totals():
    counts = {("eupen", "left_wing"): 1, ("brussel", "left_wing"): 30,
              ("brussel", "salafism"): 12, ("gent", "salafism"): 7, ("gent", "left_wing"): 9}
    table = protect(counts, 5)
    shown = shown_of(table)
    assert shown[("eupen", "left_wing")] == "<5"
    assert shown[("eupen", TOTAL)] == "<5"
    assert shown[(TOTAL, "left_wing")] == "40"  # the column total stays useful
    values = {(c.arrondissement, c.phenomenon): c.count for c in table.cells}
    assert other_value_exists(values, shown, 5, ("eupen", "left_wing"))


def test_the_obvious_recovery_from_a_row_total_is_prevented():
    # Without complementary suppression: brussel total 40 - 30 = the suppressed cell
    counts = {("brussel", "left_wing"): 30, ("brussel", "salafism"): 3,
              ("gent", "left_wing"): 8, ("gent", "salafism"): 9}
    table = protect(counts, 5)
    shown = shown_of(table)
    hidden = {k for k, m in shown.items() if not m.isdigit()}
    assert ("brussel", "salafism") in hidden
    assert len(hidden) >= 4
    values = {(c.arrondissement, c.phenomenon): c.count for c in table.cells}
    assert determined_by_totals(values, hidden) == set()


def test_a_month_of_two_single_reports_is_withheld_because_any_table_would_give_them_away():
    counts = {("a", "x"): 1, ("a", "y"): 1}
    assert protect(counts, 3).withheld
    # the reason: even with every entry suppressed, a reader works out the counts
    values = entries(counts)
    everything = dict.fromkeys(values, "<3")
    assert not other_value_exists(values, everything, 3, ("a", "x"))


def test_a_table_without_small_counts_is_shown_whole():
    table = protect({("a", "x"): 5, ("b", "x"): 7, ("b", "y"): 0}, 5)
    assert not any(c.suppressed for c in table.cells)
    assert ("b", "y") not in {(c.arrondissement, c.phenomenon) for c in table.cells}


@pytest.mark.parametrize("bad", [{("a", TOTAL): 3}, {("a", "x"): -1}])
def test_counts_must_be_inner_cells_and_non_negative(bad):
    with pytest.raises(ValueError, match="bad cell"):
        protect(bad, 5)


def test_a_month_closes_after_its_end_and_the_grace_period():
    assert month_end("2026-12") == datetime(2027, 1, 1, tzinfo=UTC)
    grace = timedelta(days=3)
    assert not is_closed("2026-09", datetime(2026, 10, 3, 23, tzinfo=UTC), grace)
    assert is_closed("2026-09", datetime(2026, 10, 4, tzinfo=UTC), grace)


@pytest.mark.parametrize(("field", "value"), [
    ("event_id", ""), ("period", "2026-13"), ("period", "2026-9"), ("arrondissement", "*"),
    ("arrondissement", "a|b"), ("phenomena", ["left_wing", "a,b"]), ("phenomena", ["x" * 65]),
])
def test_a_malformed_fact_is_named_by_its_field(field, value):
    fact = {"event_id": "e1", "period": "2026-09", "arrondissement": "eupen",
            "phenomena": ["left_wing"], "policy_version": "v"}
    assert fact_error(fact) is None
    assert fact_error({**fact, field: value}) == field


def _policy_with(section: str) -> str:
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    start = text.index("statistics:")
    end = text.index("\nrules:")
    return text[:start] + section + text[end:]


def test_the_policy_sets_the_threshold_and_defaults_to_5():
    assert Policy.load(DEFAULT_POLICY).ntf_threshold == 5
    assert Policy.from_text(_policy_with("statistics:\n  ntf_threshold: 10\n")).ntf_threshold \
        == 10
    assert Policy.from_text(_policy_with("")).ntf_threshold == 5


@pytest.mark.parametrize(("section", "message"), [
    ("statistics:\n  ntf_threshold: 2\n", "statistics.ntf_threshold"),
    ("statistics:\n  ntf_treshold: 5\n", "statistics.ntf_treshold"),
])
def test_a_bad_statistics_section_is_refused_with_its_line(section, message):
    text = _policy_with(section)
    line = text.splitlines().index(section.splitlines()[1]) + 1
    with pytest.raises(PolicyError, match=rf"line {line}: {message}"):
        Policy.from_text(text)
