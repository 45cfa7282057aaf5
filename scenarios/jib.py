"""JIB data for the demo and the tests: throw-away keys for its parties, records, the demo's
few proposals, and a long stream of concurrent proposals for the kill test.

Grounds and reasons are synthetic placeholders that carry a marker, so that tests can prove
they never reach a log, a metric, an audit record or an error.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from planr.keyfiles import KeyEntry, generate_key, save_registry
from planr.parties import JIB_OWNER
from planr.signing import KeyRegistry, Signer
from schemas.names import JIB_PROPOSAL, JIB_TICK, JIB_VOTE

#: Marks grounds and reasons: it must never leave the JIB's store and its deliveries.
SECRET_GROUNDS = "GROUNDS-MUST-NOT-LEAK"  # noqa: S105 - a marker, not a password
KEYS_VALID_FROM = datetime(2020, 1, 1, tzinfo=UTC)
#: (signing owner, schema name, record), in the order they are submitted.
Step = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class JibKeys:
    """One throw-away key per owner, and the registry of their public keys."""

    registry_path: Path
    registry: KeyRegistry
    signers: Mapping[str, Signer]
    paths: Mapping[str, Path]


def jib_keys(key_dir: Path, owners: Iterable[str]) -> JibKeys:
    """Generate a key per owner into ``key_dir`` (mode 0700; files 0600) and a registry."""
    signers: dict[str, Signer] = {}
    paths: dict[str, Path] = {}
    entries: list[KeyEntry] = []
    for owner in owners:
        path, entry = generate_key(owner, key_dir, key_id=f"{owner.replace(':', '-')}-test",
                                   valid_from=KEYS_VALID_FROM)
        signers[owner] = Signer.from_file(path, owner=owner)
        paths[owner], entries = path, [*entries, entry]
    registry_path = key_dir / "registry.yaml"
    save_registry(registry_path, entries)
    return JibKeys(registry_path, KeyRegistry(entries), signers, paths)


def _id(rng: random.Random | None) -> str:
    if rng is None:
        return str(uuid.uuid4())
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def proposal(proposer: str, arrondissement: str, subject: str, action: str, *, at: datetime,
             deadline: datetime, rng: random.Random | None = None) -> dict[str, Any]:
    return {"proposal_id": _id(rng), "proposer": proposer, "arrondissement": arrondissement,
            "subject_id": subject, "action": action,
            "grounds": f"{SECRET_GROUNDS} synthetic grounds for {action}", "proposed_at": at,
            "deadline": deadline}


def vote(proposal_id: str, service: str, choice: str, at: datetime,
         rng: random.Random | None = None) -> dict[str, Any]:
    return {"vote_id": _id(rng), "proposal_id": proposal_id, "service": service,
            "choice": choice, "reason": f"{SECRET_GROUNDS} synthetic reason", "cast_at": at}


def tick(at: datetime, rng: random.Random | None = None) -> dict[str, Any]:
    return {"tick_id": _id(rng), "at": at}


def votes_of(p: Mapping[str, Any], services: Sequence[str], choice: str, start: datetime,
             step: timedelta = timedelta(seconds=1)) -> list[Step]:
    return [(s, JIB_VOTE, vote(p["proposal_id"], s, choice, start + i * step))
            for i, s in enumerate(services)]


# ---- the demo ---------------------------------------------------------------------------

DEMO_OUTSIDER = "nccn"


def demo_owners(panel: Sequence[str]) -> list[str]:
    return sorted({*panel, "vsse", DEMO_OUTSIDER, "tfl:brussel", "tfl:liege",
                   "tfl:hainaut", JIB_OWNER})


def demo_steps(now: datetime, panel_of: Mapping[str, Sequence[str]]) -> list[Step]:
    """Five proposals: three adopted (one a removal), one rejected, one expiring a few
    seconds after ``now``; with a duplicate, an outsider's and a post-decision vote."""
    t = now
    day = timedelta(days=1)
    a = proposal("tfl:brussel", "brussel", "P-J0001", "insert", at=t, deadline=t + day)
    b = proposal("vsse", "antwerpen", "P-J0002", "insert", at=t, deadline=t + day)
    c = proposal("tfl:liege", "liege", "P-J0003", "insert", at=t,
                 deadline=t + timedelta(seconds=3))
    d = proposal("tfl:brussel", "brussel", "P-J0001", "remove", at=t, deadline=t + day)
    e = proposal("tfl:hainaut", "hainaut", "P-J0004", "insert", at=t, deadline=t + day)
    brussel, antwerpen = panel_of["brussel"], panel_of["antwerpen"]
    steps: list[Step] = [(p["proposer"], JIB_PROPOSAL, p) for p in (a, b, c, e)]
    steps += votes_of(a, brussel, "approve", t)
    steps += votes_of(b, antwerpen[:1], "approve", t)
    steps += votes_of(b, antwerpen[1:2], "object", t)
    steps += votes_of(b, antwerpen[2:3], "approve", t)  # refused: decided
    steps += votes_of(c, panel_of["liege"][:1], "approve", t)
    steps += votes_of(c, panel_of["liege"][:1], "approve", t)  # refused: already voted
    steps += votes_of(c, [DEMO_OUTSIDER], "approve", t)  # refused: not required
    steps += votes_of(e, panel_of["hainaut"], "approve", t)
    steps.append(("tfl:brussel", JIB_PROPOSAL, d))
    steps += votes_of(d, brussel, "approve", t)
    return steps


# ---- the kill test: many concurrent proposals -------------------------------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _proposal_events(rng: random.Random, at: datetime, panel: Sequence[str], *, proposer: str,
                     arrondissement: str, outsider: str) -> list[tuple[datetime, Step]]:
    """One proposal and its votes, each at its time: all approve, one objects, too few
    approve, or a mix with duplicate, outsider and late votes."""
    subject = f"P-K{rng.randrange(300):04d}"
    deadline = at + timedelta(hours=rng.randrange(2, 48))
    p = proposal(proposer, arrondissement, subject, rng.choice(("insert", "remove")), at=at,
                 deadline=deadline, rng=rng)
    events = [(at, (proposer, JIB_PROPOSAL, p))]
    kind = rng.choices(("adopt", "reject", "expire", "mixed"), (40, 25, 20, 15))[0]
    order = rng.sample(list(panel), len(panel))
    span = (deadline - at).total_seconds()
    voters = order if kind == "adopt" else order[: rng.randrange(1, len(order))]
    if kind == "mixed":
        voters = [*voters, voters[0], outsider, *order[len(voters):]]
    for service in voters:
        late = kind == "mixed" and rng.random() < 0.2
        when = deadline + timedelta(minutes=rng.randrange(1, 90)) if late else \
            at + timedelta(seconds=rng.uniform(1, span - 1))
        choice = "object" if kind == "reject" and rng.random() < 0.4 else "approve"
        events.append((when, (service, JIB_VOTE, vote(p["proposal_id"], service, choice,
                                                      when, rng))))
    if kind == "reject" and all(e[1][2].get("choice") != "object" for e in events[1:]):
        events[-1][1][2]["choice"] = "object"
    return events


def concurrent_stream(rng: random.Random, n: int, panel_of: Mapping[str, Sequence[str]],
                      proposers: Sequence[tuple[str, str]], outsider: str) -> list[Step]:
    """``n`` proposals over a few days, their votes interleaved in time order with ticks
    every 30 minutes, and a last tick after every deadline: every proposal is decided."""
    heap: list[tuple[datetime, int, Step]] = []
    seq = 0
    for _ in range(n):
        proposer, arrondissement = rng.choice(proposers)
        at = T0 + timedelta(seconds=rng.uniform(0, 3 * 86_400))
        for when, step in _proposal_events(rng, at, panel_of[arrondissement], proposer=proposer,
                                           arrondissement=arrondissement, outsider=outsider):
            heapq.heappush(heap, (when, seq, step))
            seq += 1
    end = max(when for when, _, _ in heap)
    when = T0
    while when <= end:
        heapq.heappush(heap, (when, seq, (JIB_OWNER, JIB_TICK, tick(when, rng))))
        seq += 1
        when += timedelta(minutes=30)
    heapq.heappush(heap, (end + timedelta(days=3), seq,
                          (JIB_OWNER, JIB_TICK, tick(end + timedelta(days=3), rng))))
    return [step for _, _, step in sorted(heap)]
