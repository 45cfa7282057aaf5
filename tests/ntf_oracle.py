"""Independent oracles for the NTF's suppressed month tables (no tests here).

Written apart from ``consumers.ntf.suppression`` and by other means: the table's equations are
written out directly (no zero-sum trick, no graph), and

- :func:`determined_by_totals` solves them exactly (Gaussian elimination over fractions): a
  suppressed entry is determined when its unit vector lies in the row space of the equations
  restricted to the suppressed unknowns;
- :func:`other_value_exists` searches, by backtracking over integer values, for a second table
  that matches everything published (the shown counts, the zeros, the totals) and the bounds a
  reader knows (``<t``: 1..t-1; ``x``: at least t), in which the entry has another value.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

STAR = "*"
Key = tuple[str, str]


def _lines(rows: list[str], cols: list[str]) -> list[tuple[list[Key], Key]]:
    """Each equation "sum of these inner cells = this total"."""
    out = [([(r, c) for c in cols], (r, STAR)) for r in rows]
    out += [([(r, c) for r in rows], (STAR, c)) for c in cols]
    out.append(([(r, c) for r in rows for c in cols], (STAR, STAR)))
    return out


def _shape(values: Mapping[Key, int]) -> tuple[list[str], list[str]]:
    rows = sorted({r for r, c in values if STAR not in (r, c)})
    cols = sorted({c for r, c in values if STAR not in (r, c)})
    return rows, cols


def determined_by_totals(values: Mapping[Key, int], suppressed: set[Key]) -> set[Key]:
    """The suppressed entries that the published entries and the equations determine."""
    rows, cols = _shape(values)
    unknowns = sorted(suppressed)
    index = {k: i for i, k in enumerate(unknowns)}
    matrix: list[list[Fraction]] = []
    for cells, total in _lines(rows, cols):
        eq = [Fraction(0)] * len(unknowns)
        for k in cells:
            if k in index:
                eq[index[k]] += 1
        if total in index:
            eq[index[total]] -= 1
        if any(eq):
            matrix.append(eq)
    pivots = _rref(matrix, len(unknowns))
    found = set()
    for col, row in pivots.items():
        if all(v == 0 for j, v in enumerate(matrix[row]) if j != col):
            found.add(unknowns[col])
    return found


def _rref(m: list[list[Fraction]], width: int) -> dict[int, int]:
    """Reduce ``m`` in place; returns pivot column -> row."""
    pivots: dict[int, int] = {}
    row = 0
    for col in range(width):
        pick = next((i for i in range(row, len(m)) if m[i][col] != 0), None)
        if pick is None:
            continue
        m[row], m[pick] = m[pick], m[row]
        lead = m[row][col]
        m[row] = [v / lead for v in m[row]]
        for i in range(len(m)):
            if i != row and m[i][col] != 0:
                f = m[i][col]
                m[i] = [a - f * b for a, b in zip(m[i], m[row], strict=True)]
        pivots[col] = row
        row += 1
    return pivots


def _range(key: Key, values: Mapping[Key, int], shown: Mapping[Key, str], t: int,
           slack: int) -> tuple[int, int]:
    """What a reader knows of an entry: its value, or its bounds (capped for the search)."""
    if key not in values:
        return 0, 0  # absent: zero
    mark = shown[key]
    if mark == f"<{t}":
        return 1, t - 1
    if mark == "x":  # searched near the truth: a second table found there is proof enough
        return max(t, values[key] - slack), values[key] + slack
    return int(mark), int(mark)


def other_value_exists(values: Mapping[Key, int], shown: Mapping[Key, str], t: int,
                       target: Key, slack: int = 6) -> bool:
    """Whether some table fits what is published, but gives ``target`` another value."""
    rows, cols = _shape(values)
    inner = [(r, c) for r in rows for c in cols]
    ranges = {k: _range(k, values, shown, t, slack) for k in inner}
    limits = {total: _range(total, values, shown, t, slack)
              for _, total in _lines(rows, cols)}
    true = values[target]
    for lo, hi in ((-(10**9), true - 1), (true + 1, 10**9)):
        dom = dict(ranges)
        lim = dict(limits)
        if target in dom:
            dom[target] = (max(dom[target][0], lo), min(dom[target][1], hi))
        else:
            lim[target] = (max(lim[target][0], lo), min(lim[target][1], hi))
        fixed = {k: dom[k][0] for k in inner if dom[k][0] == dom[k][1] and k != target}
        order = sorted((k for k in inner if k not in fixed), key=lambda k: k != target)
        if _search(order, dom, _lines(rows, cols), lim, fixed, near=values):
            return True
    return False


def _feasible(lines: list[tuple[list[Key], Key]], dom: Mapping[Key, tuple[int, int]],
              lim: Mapping[Key, tuple[int, int]], chosen: Mapping[Key, int]) -> bool:
    for cells, total in lines:
        low = sum(chosen[k] if k in chosen else dom[k][0] for k in cells)
        high = sum(chosen[k] if k in chosen else dom[k][1] for k in cells)
        lo, hi = lim[total]
        if high < lo or low > hi:
            return False
    return True


def _search(order: list[Key], dom: Mapping[Key, tuple[int, int]],
            lines: list[tuple[list[Key], Key]], lim: Mapping[Key, tuple[int, int]],
            chosen: dict[Key, int], near: Mapping[Key, int]) -> bool:
    """Backtracking over the inner cells (values nearest the true ones tried first)."""
    if any(lo > hi for lo, hi in dom.values()) or not _feasible(lines, dom, lim, chosen):
        return False
    key = next((k for k in order if k not in chosen), None)
    if key is None:
        return True
    lo, hi = dom[key]
    for v in sorted(range(lo, hi + 1), key=lambda v: abs(v - near.get(key, 0))):
        chosen[key] = v
        if _search(order, dom, lines, lim, chosen, near):
            return True
        del chosen[key]
    return False
