"""Cell suppression for the National Taskforce's month tables: pure logic, no I/O.

A month table counts signals by arrondissement (rows) and phenomenon (columns), with a total
per row, per column and overall (``*``). What the NTF may see of it:

- **Zeros are published** (as absent cells: a cell not in the table is zero). A zero says
  nothing about any report, and it makes the table useful; but it is known to a reader, so the
  checks below treat it as a published value.
- **Primary suppression.** A cell or a total with ``0 < count < threshold`` is shown as
  ``<threshold`` (the reader then knows it lies in ``1 .. threshold-1``).
- **Secondary (complementary) suppression.** Published totals could give a suppressed cell
  away (a row total minus the other cells of the row). Further cells are withheld, shown as
  ``x``; such a cell was publishable, so a reader knows it is at least ``threshold``.

**When is a suppressed cell safe?** Write the table with its totals as one table ``y`` whose
every line sums to zero (a total enters its line with a minus sign). What a reader knows is
the published entries and the bounds of the suppressed ones; the suppressed values that fit
are the true ones plus any integer change ``d`` that keeps every line sum at zero and every
entry within its bounds. Such a change is a flow around cycles of the bipartite graph
"row -- suppressed entry -- column", each entry going up or down alternately. A suppressed
entry is *exposed* (its value can be worked out) exactly when no such cycle through it can
move by one unit in either direction without leaving a bound: row and column sums are a
network matrix, so the fitting values form an integer interval, and any fitting change splits
into cycles that move each entry towards it (conformal decomposition). :func:`exposed` checks
this for each suppressed entry with one graph search.

**The heuristic.** For each primary entry still exposed, the cheapest cycle through it is
found (Dijkstra: already withheld entries are free, a new inner cell costs its count, a new
total costs more than any inner cell), and the cells on it are withheld. Every entry on a
movable cycle is protected, and withholding more never exposes an entry that was protected,
so one pass suffices; :func:`protect` still verifies the result with :func:`exposed`. A month
for which no cycle exists (a handful of reports in all) is withheld entirely.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

#: The arrondissement or phenomenon of a total.
TOTAL = "*"
#: The mark of a complementary suppression.
WITHHELD = "x"

Key = tuple[str, str]  # (arrondissement, phenomenon), either may be TOTAL
Node = tuple[str, str]  # ("r", arrondissement) or ("c", phenomenon)


class Status(StrEnum):
    SHOWN = "shown"
    PRIMARY = "primary"  # 0 < count < threshold
    SECONDARY = "secondary"  # withheld to protect a primary entry


@dataclass(frozen=True)
class Cell:
    """One published entry of a month table (an inner cell or a total)."""

    arrondissement: str
    phenomenon: str
    count: int
    status: Status

    @property
    def suppressed(self) -> bool:
        return self.status is not Status.SHOWN

    def shown(self, threshold: int) -> str:
        if self.status is Status.PRIMARY:
            return f"<{threshold}"
        return WITHHELD if self.status is Status.SECONDARY else str(self.count)


@dataclass(frozen=True)
class Table:
    """A protected month table: its entries, or none when the month is withheld."""

    threshold: int
    cells: tuple[Cell, ...]
    withheld: bool = False


def entries(counts: Mapping[Key, int]) -> dict[Key, int]:
    """The table's entries: every non-zero inner cell, each row's and column's total, and the
    grand total (rows and columns without any count are left out: they are zeros)."""
    out: dict[Key, int] = {}
    for (arr, ph), n in counts.items():
        if n < 0 or TOTAL in (arr, ph):
            raise ValueError(f"bad cell ({arr!r}, {ph!r}): counts are inner cells, >= 0")
        if n == 0:
            continue
        out[(arr, ph)] = n
        out[(arr, TOTAL)] = out.get((arr, TOTAL), 0) + n
        out[(TOTAL, ph)] = out.get((TOTAL, ph), 0) + n
        out[(TOTAL, TOTAL)] = out.get((TOTAL, TOTAL), 0) + n
    return out


def bounds(status: Status, threshold: int) -> tuple[int, int | None]:
    """What a reader knows of an entry's count from how it is shown."""
    if status is Status.PRIMARY:
        return 1, threshold - 1
    if status is Status.SECONDARY:
        return threshold, None
    raise ValueError("a shown entry has no bounds: its count is published")


def _sign(key: Key) -> int:
    """How a count enters the zero-sum table: totals of a line with a minus sign."""
    return -1 if (key[0] == TOTAL) != (key[1] == TOTAL) else 1


def _fits(count: int, lo: int, hi: int | None) -> bool:
    return count >= lo and (hi is None or count <= hi)


def _moves(key: Key, count: int, status: Status, threshold: int) -> tuple[bool, bool]:
    """Whether the entry's zero-sum value ``y`` may go (up, down) by one within its bounds."""
    lo, hi = bounds(status, threshold)
    s = _sign(key)
    return _fits(count + s, lo, hi), _fits(count - s, lo, hi)


def _ends(key: Key) -> tuple[Node, Node]:
    return ("r", key[0]), ("c", key[1])


def _residual(
    values: Mapping[Key, int], status: Mapping[Key, Status], threshold: int, skip: Key
) -> dict[Node, list[Node]]:
    """Arcs row -> column for entries that may go up, column -> row for those that may go
    down (``skip`` left out)."""
    arcs: dict[Node, list[Node]] = {}
    for key, st in status.items():
        if st is Status.SHOWN or key == skip:
            continue
        up, down = _moves(key, values[key], st, threshold)
        row, col = _ends(key)
        if up:
            arcs.setdefault(row, []).append(col)
        if down:
            arcs.setdefault(col, []).append(row)
    return arcs


def _reaches(arcs: Mapping[Node, list[Node]], start: Node, goal: Node) -> bool:
    seen = {start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            return True
        for nxt in arcs.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return False


def is_exposed(
    key: Key, values: Mapping[Key, int], status: Mapping[Key, Status], threshold: int
) -> bool:
    """Whether the published entries and the bounds pin the suppressed entry ``key``."""
    up, down = _moves(key, values[key], status[key], threshold)
    arcs = _residual(values, status, threshold, key)
    row, col = _ends(key)
    return not ((up and _reaches(arcs, col, row)) or (down and _reaches(arcs, row, col)))


def exposed(
    values: Mapping[Key, int], status: Mapping[Key, Status], threshold: int
) -> list[Key]:
    """Every suppressed entry whose count a reader can work out."""
    return [k for k in sorted(status) if status[k] is not Status.SHOWN
            and is_exposed(k, values, status, threshold)]


def _cost(key: Key, values: Mapping[Key, int], status: Mapping[Key, Status]) -> tuple[int, int]:
    if status[key] is not Status.SHOWN:
        return 0, 0
    return (1, values[key]) if TOTAL in key else (0, values[key])


def _candidate_arcs(
    values: Mapping[Key, int], status: Mapping[Key, Status], threshold: int, skip: Key
) -> dict[Node, list[tuple[Node, Key]]]:
    """The residual arcs if every shown entry were withheld too (with its cost)."""
    arcs: dict[Node, list[tuple[Node, Key]]] = {}
    for key in sorted(values):
        if key == skip:
            continue
        st = status[key]
        up, down = _moves(key, values[key], Status.SECONDARY if st is Status.SHOWN else st,
                          threshold)
        row, col = _ends(key)
        if up:
            arcs.setdefault(row, []).append((col, key))
        if down:
            arcs.setdefault(col, []).append((row, key))
    return arcs


def _cheapest_path(
    arcs: Mapping[Node, list[tuple[Node, Key]]], values: Mapping[Key, int],
    status: Mapping[Key, Status], start: Node, goal: Node,
) -> tuple[tuple[int, int, int], list[Key]] | None:
    """Dijkstra from ``start`` to ``goal``: cost (new totals, new counts, hops) and entries."""
    best: dict[Node, tuple[int, int, int]] = {start: (0, 0, 0)}
    back: dict[Node, tuple[Node, Key]] = {}
    heap: list[tuple[tuple[int, int, int], Node]] = [((0, 0, 0), start)]
    while heap:
        cost, node = heapq.heappop(heap)
        if cost != best.get(node):
            continue
        if node == goal:
            path: list[Key] = []
            while node != start:
                node, key = back[node]
                path.append(key)
            return cost, path
        for nxt, key in arcs.get(node, ()):
            totals, counts = _cost(key, values, status)
            new = (cost[0] + totals, cost[1] + counts, cost[2] + 1)
            if nxt not in best or new < best[nxt]:
                best[nxt] = new
                back[nxt] = (node, key)
                heapq.heappush(heap, (new, nxt))
    return None


def _cover(
    key: Key, values: Mapping[Key, int], status: Mapping[Key, Status], threshold: int
) -> list[Key] | None:
    """The shown entries to withhold so that ``key`` lies on a movable cycle, cheapest
    first; ``None`` if no cycle exists even with every entry withheld."""
    up, down = _moves(key, values[key], status[key], threshold)
    arcs = _candidate_arcs(values, status, threshold, key)
    row, col = _ends(key)
    found = [p for p in (
        _cheapest_path(arcs, values, status, col, row) if up else None,
        _cheapest_path(arcs, values, status, row, col) if down else None,
    ) if p is not None]
    if not found:
        return None
    _, path = min(found)
    return [k for k in path if status[k] is Status.SHOWN]


def protect(counts: Mapping[Key, int], threshold: int) -> Table:
    """The month table of ``counts`` (inner cells by arrondissement and phenomenon) as the NTF
    may see it: no entry below ``threshold`` shown, none that the others give away."""
    if threshold < 2:
        raise ValueError("the threshold must be at least 2")
    values = entries(counts)
    status = {k: Status.PRIMARY if v < threshold else Status.SHOWN for k, v in values.items()}
    for key in sorted(k for k, st in status.items() if st is Status.PRIMARY):
        if not is_exposed(key, values, status, threshold):
            continue
        more = _cover(key, values, status, threshold)
        if more is None:
            return Table(threshold, (), withheld=True)
        for k in more:
            status[k] = Status.SECONDARY
    if exposed(values, status, threshold):  # pragma: no cover - the pass above prevents it
        return Table(threshold, (), withheld=True)
    return Table(threshold, tuple(Cell(a, p, values[(a, p)], status[(a, p)])
                                  for a, p in sorted(values)))
