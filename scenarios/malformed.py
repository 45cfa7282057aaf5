"""A malformed-input run: thousands of bad records of every kind, mixed with valid signed
signals, as bytes to write straight to the topics. Pure: no I/O, deterministic per seed (and
``published_at``, the publication time stamped on every signal).

Each bad record carries the dead-letter reason it must get (and, where the contract fixes it,
the detail): the generator's intent, stated from the documented contracts (the codec's
single-object header, the validation rules of :mod:`schemas.validation`, the signature
sub-reasons of :mod:`planr.signing`, the event identity rules), never by asking the router.

Records that must get past the signature check (every category but ``forged_*`` and
``tombstone``) are signed by the rightful agency's key, so that the check they target is the
one that stops them. ``reused_ids`` form a second wave, to be written once the first has been
routed: they reuse the event ids of valid signals of the first wave.

Categories and their reasons (one reason each; none is ambiguous): ``random_bytes`` never
starting with the single-object marker (``bad_header``); ``tombstone`` (``undecodable``);
``truncated_avro`` cut inside the 10-byte header (``bad_header``), in the body or followed by
extra bytes (``undecodable``); ``unknown_fingerprint`` (``unknown_schema``); ``wrong_record``,
an NTF fact or a dead letter (``unexpected_record``); ``invalid_fields``, ``unknown_places``
and ``oversize`` (``invalid_signal`` and the field path); ``agency_mismatch``; ``reused_ids``
(``event_id_conflict``, ``agency`` or ``content``); ``forged_signature`` and
``forged_delivery`` (``unauthenticated`` and the sub-reason, or ``bad_header`` for
router-signed bytes that are no delivery).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from planr.domain import Agency, Recipient, RecipientClass
from planr.errors import UnknownSchemaError
from planr.signing import HEADER_KEY_ID, HEADER_SIGNATURE, ROUTER, Signer, sign_headers
from planr.topics import Topics
from scenarios.builders import SECRET_SUMMARY
from scenarios.invalid_fields import (
    INVALID_FIELDS,
    UNKNOWN_PLACES,
    Mutation,
)
from scenarios.signals import PUBLISHERS, generate
from schemas.codec import HEADER_LEN, MAGIC, Codec
from schemas.models import SignalIn
from schemas.names import DEAD_LETTER, NTF_FACT, SIGNAL, WITHDRAWAL

#: Above the 1 MiB default maximum request size of Kafka producers (and of the broker's
#: default message size): only a producer configured for it can write such a record.
HUGE_VALUE_BYTES = 1_100_000
DELIVERY_TARGETS = (Recipient(RecipientClass.FTF_DB), Recipient(RecipientClass.TFL, "brussel"))

#: Share of each category among the bad records.
CATEGORIES: Mapping[str, float] = {
    "random_bytes": 0.09, "tombstone": 0.01, "truncated_avro": 0.10,
    "unknown_fingerprint": 0.08, "wrong_record": 0.04, "invalid_fields": 0.20,
    "unknown_places": 0.10, "agency_mismatch": 0.07, "oversize": 0.05, "reused_ids": 0.06,
    "forged_signature": 0.18, "forged_delivery": 0.02,
}  # fmt: skip

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Expected:
    """The dead letter a bad record must produce; ``detail`` None: any detail."""

    reason: str
    detail: str | None = None


@dataclass(frozen=True)
class Record:
    """One record to write: a valid signal (``expected`` None, ``signal`` set) or a bad one."""

    category: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    expected: Expected | None = None
    signal: tuple[Agency, SignalIn] | None = None


@dataclass
class MalformedRun:
    """Two waves of records, each in the order to write it, and the private keys the forgers
    made up (raw bytes), for a leak audit."""

    waves: tuple[list[Record], list[Record]]
    forger_keys: list[bytes] = field(default_factory=list)

    @property
    def records(self) -> list[Record]:
        return [*self.waves[0], *self.waves[1]]

    @property
    def bad(self) -> list[Record]:
        return [r for r in self.records if r.expected is not None]

    @property
    def valid(self) -> list[tuple[Agency, SignalIn]]:
        return [r.signal for r in self.records if r.signal is not None]


class _Gen:
    """The state the category builders share."""

    def __init__(self, seed: int, *, topics: Topics, codec: Codec, signers: Mapping[str, Signer],
                 published_at: datetime, valid: list[Record]) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - test data, not security
        self.topics, self.codec, self.signers = topics, codec, signers
        self.published_at = published_at
        self.valid = valid
        self.bases = [s for _, s in generate(500, seed=seed + 1)]
        self.forgers: dict[str, Signer] = {}
        self.forger_keys: list[bytes] = []
        self.n = self.n_huge = self.n_huge_delivery = 0

    # ---- helpers ------------------------------------------------------------------------

    def agency(self, *, not_: Agency | None = None) -> Agency:
        return self.rng.choice([a for a in PUBLISHERS if a is not not_])

    def avro(self, agency: Agency) -> dict[str, Any]:
        """A valid Signal record of ``agency`` with a fresh event id and a marked summary."""
        self.n += 1
        base = self.rng.choice(self.bases)
        rec = base.to_avro(agency, self.published_at)
        rec["event_id"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        rec["summary"] = f"{SECRET_SUMMARY} bad {self.n}"
        return rec

    def encode(self, rec: Mapping[str, Any], name: str = SIGNAL) -> bytes:
        return self.codec.encode(name, rec)

    def signed(self, owner: str, topic: str, value: bytes) -> Headers:
        return sign_headers(self.signers[owner], topic, value)

    def record(self, category: str, agency: Agency, value: bytes, expected: Expected, *,
               key: bytes | None = None, topic: str | None = None) -> Record:
        """A bad record on ``agency``'s ingress topic, signed by ``agency``."""
        topic = topic or self.topics.ingress(agency)
        return Record(category, topic, key or self.rng.randbytes(6), value,
                      self.signed(agency.value, topic, value), expected)

    def forger(self, owner: str) -> Signer:
        """A key of ``owner`` that no registry holds (made up from the seeded generator)."""
        if owner not in self.forgers:
            raw, number = self.rng.randbytes(32), self.rng.randrange(10**6)
            self.forger_keys.append(raw)
            self.forgers[owner] = Signer(Ed25519PrivateKey.from_private_bytes(raw),
                                         key_id=f"forger.{owner}.{number}", owner=owner)
        return self.forgers[owner]

    # ---- categories whose bytes never decode --------------------------------------------

    def random_bytes(self, cat: str) -> Record:
        value = MAGIC
        while value[:2] == MAGIC:  # a valid header by chance would make it another case
            value = self.rng.randbytes(self.rng.randrange(0, 400))
        return self.record(cat, self.agency(), value, Expected("bad_header"))

    def tombstone(self, cat: str) -> Record:
        topic = self.topics.ingress(self.agency())
        return Record(cat, topic, self.rng.randbytes(6), None, [],
                      Expected("undecodable", "record has no value (tombstone)"))

    def truncated_avro(self, cat: str) -> Record:
        """Cut inside the header (``bad_header``), in the body, or followed by extra bytes
        (both ``undecodable``)."""
        agency = self.agency()
        whole = self.encode(self.avro(agency))
        roll = self.rng.random()
        if roll < 0.1:
            return self.record(cat, agency, whole[: self.rng.randrange(0, HEADER_LEN)],
                               Expected("bad_header"))
        if roll < 0.2:
            value = whole + self.rng.randbytes(self.rng.randrange(1, 32))
        else:
            value = whole[: self.rng.randrange(HEADER_LEN, len(whole))]
        return self.record(cat, agency, value, Expected("undecodable"))

    def unknown_fingerprint(self, cat: str) -> Record:
        """A valid Signal body behind a fingerprint no schema has."""
        agency = self.agency()
        whole = self.encode(self.avro(agency))
        while True:
            fp = self.rng.randbytes(8)
            try:
                self.codec.store.writer(fp)
            except UnknownSchemaError:
                break
        return self.record(cat, agency, MAGIC + fp + whole[HEADER_LEN:],
                           Expected("unknown_schema"))

    def wrong_record(self, cat: str) -> Record:
        """A well-formed record of a schema that has no place on an ingress topic."""
        agency = self.agency()
        if self.rng.random() < 0.5:
            value = self.encode({"event_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
                                 "period": "2026-01", "arrondissement": "brussel",
                                 "phenomena": ["salafism"], "policy_version": "v"}, NTF_FACT)
        else:
            value = self.encode({
                "reason": "x", "detail": "", "source_topic": "t", "source_partition": 0,
                "source_offset": 1, "original_key": None, "original": b"",
                "failed_at": self.published_at}, DEAD_LETTER)
        return self.record(cat, agency, value, Expected("unexpected_record"))


class _Builders(_Gen):
    """The categories that need a valid signal, or signatures."""

    def mutated(self, cat: str, mutations: tuple[Mutation, ...]) -> Record:
        agency = self.agency()
        rec = self.avro(agency)
        path = self.rng.choice(mutations)(self.rng, rec)
        return self.record(cat, agency, self.encode(rec), Expected("invalid_signal", path))

    def invalid_fields(self, cat: str) -> Record:
        return self.mutated(cat, INVALID_FIELDS)

    def unknown_places(self, cat: str) -> Record:
        return self.mutated(cat, UNKNOWN_PLACES)

    def agency_mismatch(self, cat: str) -> Record:
        """Signed by the owner of the topic, claiming to come from another agency."""
        agency = self.agency()
        other = self.agency(not_=agency)
        rec = self.avro(agency)
        if self.rng.random() < 0.5:
            value = self.encode({**rec, "agency": other.value})
        else:
            value = self.encode({"event_id": rec["event_id"], "agency": other.value,
                                 "subject_id": rec["subject"]["id"], "version": 1,
                                 "withdrawn_at": self.published_at}, WITHDRAWAL)
        return self.record(cat, agency, value, Expected("agency_mismatch"))

    def oversize(self, cat: str) -> Record:
        """A summary over the 4,000-character bound; the first one over 1 MiB, the second
        with a key over 1 MiB."""
        agency = self.agency()
        rec = self.avro(agency)
        huge, self.n_huge = self.n_huge, self.n_huge + 1
        size = HUGE_VALUE_BYTES if huge == 0 else self.rng.randrange(4_001, 9_000)
        rec["summary"] = (rec["summary"] + " " + "x" * size)[:size]
        return self.record(cat, agency, self.encode(rec), Expected("invalid_signal", "summary"),
                           key=b"k" * HUGE_VALUE_BYTES if huge == 1 else None)

    def reused_ids(self, cat: str) -> Record:
        """A valid signal (or withdrawal) reusing the event id of a routed valid signal: other
        content from the same agency, or anything from another agency (OCAM's inclusion
        decision among them)."""
        base = self.rng.choice(self.valid)
        assert base.signal is not None
        owner, signal = base.signal
        rec = signal.to_avro(owner, self.published_at)
        rec["summary"] = f"{SECRET_SUMMARY} reuse {self.n}"
        kind = self.rng.randrange(4)
        if kind == 0:
            rec["occurred_at"] -= timedelta(minutes=1 + self.rng.randrange(60))
            return self.record(cat, owner, self.encode(rec),
                               Expected("event_id_conflict", "content"), key=base.key)
        other = Agency.OCAM if kind == 2 and owner is not Agency.OCAM else self.agency(
            not_=owner)
        if kind == 3:
            value = self.encode({"event_id": rec["event_id"], "agency": other.value,
                                 "subject_id": rec["subject"]["id"], "version": 1,
                                 "withdrawn_at": self.published_at}, WITHDRAWAL)
        else:
            rec["agency"] = other.value
            if kind == 2:
                rec["ocam"] = {"action": "include", "threat_level": 3, "basis": "established"}
            value = self.encode(rec)
        return self.record(cat, other, value, Expected("event_id_conflict", "agency"),
                           key=base.key)

    def forged_signature(self, cat: str) -> Record:
        """A valid signal whose signature is missing, foreign, or does not verify."""
        agency = self.agency()
        topic = self.topics.ingress(agency)
        rec = self.avro(agency)
        value = self.encode(rec)
        headers, detail = self.forge(agency.value, topic, value, rec)
        return Record(cat, topic, self.rng.randbytes(6), value, headers,
                      Expected("unauthenticated", detail))

    def forge(self, owner: str, topic: str, value: bytes, rec: dict[str, Any]
              ) -> tuple[Headers, str]:
        """Headers that fail the check of a record of ``owner``, and the detail to expect."""
        own, kid = self.signers[owner], self.signers[owner].key_id.encode()
        other = self.signers[self.rng.choice(
            [o for o in (*(a.value for a in PUBLISHERS), ROUTER) if o != owner])]
        forger = self.forger(owner)
        elsewhere = self.topics.ingress(self.agency(not_=Agency(rec["agency"])))
        bad_sig = f"bad_signature key_id={own.key_id}"

        def sig() -> bytes:
            return own.sign(topic, value)

        variants: list[Callable[[], tuple[Headers, str]]] = [
            lambda: ([], "unsigned"),
            lambda: ([(HEADER_KEY_ID, kid)], "unsigned"),
            lambda: (sign_headers(forger, topic, value), f"unknown_key key_id={forger.key_id}"),
            lambda: ([(HEADER_KEY_ID, b"../keys/x.pem"), (HEADER_SIGNATURE, sig())],
                     "unknown_key"),
            lambda: ([(HEADER_KEY_ID, b"\xff\xfe"), (HEADER_SIGNATURE, sig())], "unknown_key"),
            lambda: (sign_headers(other, topic, value), f"wrong_signer key_id={other.key_id}"),
            # the owner signed other bytes (tampered), or this value for another topic
            lambda: (sign_headers(own, topic, self.encode(
                {**rec, "summary": rec["summary"] + "."})), bad_sig),
            lambda: (sign_headers(own, elsewhere, value), bad_sig),
            lambda: ([(HEADER_KEY_ID, kid), (HEADER_SIGNATURE, sig()[:63])], bad_sig),
            lambda: ([(HEADER_KEY_ID, kid), (HEADER_SIGNATURE, sig())] * 2, "bad_signature"),
        ]
        return self.rng.choice(variants)()

    def forged_delivery(self, cat: str) -> Record:
        """Written straight to a delivery topic: unsigned, signed by an agency, a router
        signature of other bytes, or router-signed bytes that are no delivery."""
        target = self.rng.choice(DELIVERY_TARGETS)
        topic = self.topics.delivery(target)
        router = self.signers[ROUTER]
        agency = self.agency()
        value = self.encode(self.avro(agency))
        if self.n_huge_delivery == 0:
            self.n_huge_delivery += 1
            value = self.rng.randbytes(HUGE_VALUE_BYTES)
            return Record(cat, topic, b"huge", value, [], Expected("unauthenticated", "unsigned"))
        roll = self.rng.randrange(4)
        if roll == 0:
            return Record(cat, topic, None, value, [], Expected("unauthenticated", "unsigned"))
        if roll == 1:
            own = self.signers[agency.value]
            return Record(cat, topic, None, value, sign_headers(own, topic, value),
                          Expected("unauthenticated", f"wrong_signer key_id={own.key_id}"))
        if roll == 2:
            return Record(cat, topic, None, value, sign_headers(router, topic, value[:-1]),
                          Expected("unauthenticated", f"bad_signature key_id={router.key_id}"))
        junk = self.rng.randbytes(self.rng.randrange(1, 200)).lstrip(MAGIC[:1])
        return Record(cat, topic, None, junk, sign_headers(router, topic, junk),
                      Expected("bad_header"))



def malformed_run(topics: Topics, codec: Codec, signers: Mapping[str, Signer], *,
                  published_at: datetime, bad: int = 10_000, valid: int = 2_000,
                  seed: int = 8) -> MalformedRun:
    """``bad`` bad records in :data:`CATEGORIES` shares and ``valid`` valid signed signals
    (:func:`scenarios.signals.generate`), each summary marked with
    :data:`~scenarios.builders.SECRET_SUMMARY`. ``signers``: a key for every publishing
    agency and the router, by owner."""
    good = [_valid(topics, codec, signers, agency=agency, signal=signal,
                   published_at=published_at, i=i)
            for i, (agency, signal) in enumerate(generate(valid, seed=seed))]
    gen = _Builders(seed, topics=topics, codec=codec, signers=signers,
                   published_at=published_at, valid=good)
    waves: tuple[list[Record], list[Record]] = (list(good), [])
    for cat, share in CATEGORIES.items():
        build: Callable[[str], Record] = getattr(gen, cat)
        wave = waves[1] if cat == "reused_ids" else waves[0]
        wave.extend(build(cat) for _ in range(round(share * bad)))
    for wave in waves:
        gen.rng.shuffle(wave)
    return MalformedRun(waves, gen.forger_keys)


def _valid(topics: Topics, codec: Codec, signers: Mapping[str, Signer], *, agency: Agency,
           signal: SignalIn, published_at: datetime, i: int) -> Record:
    marked = signal.model_copy(update={"summary": f"{SECRET_SUMMARY} valid {i}"})
    topic = topics.ingress(agency)
    value = codec.encode(SIGNAL, marked.to_avro(agency, published_at))
    return Record("valid", topic, marked.subject.id.encode(), value,
                  sign_headers(signers[agency.value], topic, value), signal=(agency, marked))
