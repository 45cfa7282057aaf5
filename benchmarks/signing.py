"""Signing and checking per record: one signature per record versus one per chunk (a
benchmark, not a test).

Records of 500 bytes spread over eight topics are signed by one producer, then checked.
``single`` signs each record (today's form without a proof); ``chunk N`` signs chunks of N
records with one signature over their hash tree (:func:`planr.signing.sign_chunk`). Checking
is measured twice: one reader that sees every record (the router reading an agency's ingress
topic: one Ed25519 check per chunk), and eight readers with a registry each, each reading one
topic (the router's outputs spread over recipients: one check per chunk and topic). The best
of a few rounds is reported, to damp a noisy machine; compare figures of one run only.

    python -m benchmarks.signing [RECORDS]
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from planr.keyfiles import KeyEntry
from planr.signing import KeyRegistry, Signer, sign_chunk, sign_headers, verify_record

TOPICS = [f"planr.deliver.tfl.t{i}" for i in range(8)]
VALUE_BYTES = 500
AT = datetime(2026, 12, 1, tzinfo=UTC)
CHUNKS = (1, 16, 32, 64)

Signed = list[tuple[str, bytes, list[tuple[str, bytes]]]]


@dataclass(frozen=True)
class Figures:
    name: str
    records: int
    header_bytes: float
    sign_s: float
    verify_one_reader_s: float
    verify_eight_readers_s: float

    def line(self) -> str:
        def per_s(seconds: float) -> str:
            return f"{self.records / seconds:>9,.0f}/s"

        both = self.sign_s + self.verify_one_reader_s
        return (f"  {self.name:<9} {self.header_bytes:>5.0f} B  sign {per_s(self.sign_s)}"
                f"  verify, 1 reader {per_s(self.verify_one_reader_s)}"
                f"  8 readers {per_s(self.verify_eight_readers_s)}"
                f"  sign+verify {1e6 * both / self.records:6.1f} us/record")


def _signer() -> tuple[Signer, Callable[[], KeyRegistry]]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    entry = KeyEntry(id="bench-2026-01", owner="bench",
                     public_key=base64.b64encode(public).decode(),
                     valid_from=AT - timedelta(days=1))
    return Signer(key, key_id=entry.id, owner="bench"), lambda: KeyRegistry([entry])


def _records(n: int) -> list[tuple[str, bytes]]:
    return [(TOPICS[i % len(TOPICS)], i.to_bytes(8, "big") * (VALUE_BYTES // 8))
            for i in range(n)]


def _sign(signer: Signer, records: list[tuple[str, bytes]], chunk: int) -> Signed:
    if chunk == 1:
        return [(t, v, sign_headers(signer, t, v)) for t, v in records]
    out: Signed = []
    for i in range(0, len(records), chunk):
        part = records[i : i + chunk]
        out += [(t, v, h) for (t, v), h in zip(part, sign_chunk(signer, part), strict=True)]
    return out


def _verify(registries: Callable[[], KeyRegistry], signed: Signed, readers: int) -> float:
    """Seconds to check every record, each topic's records by its own reader."""
    mine = [registries() for _ in range(readers)]
    route = {topic: mine[i % readers] for i, topic in enumerate(TOPICS)}
    started = time.perf_counter()
    for topic, value, headers in signed:
        verify_record(route[topic], topic, value, headers, at=AT, expected_owner="bench")
    return time.perf_counter() - started


def measure(n: int, chunks: tuple[int, ...] = CHUNKS, rounds: int = 5) -> list[Figures]:
    """Each chunk size (1: single), measured in turns within each round, so that a busy
    machine's drift hits every size alike; the best round of each counts."""
    signer, registries = _signer()
    records = _records(n)
    best: dict[int, list[float]] = {c: [float("inf")] * 3 for c in chunks}
    header_bytes: dict[int, float] = {}
    for _ in range(rounds):
        for chunk in chunks:
            started = time.perf_counter()
            signed = _sign(signer, records, chunk)
            times = (time.perf_counter() - started, _verify(registries, signed, 1),
                     _verify(registries, signed, len(TOPICS)))
            best[chunk] = [min(a, b) for a, b in zip(best[chunk], times, strict=True)]
            header_bytes[chunk] = sum(len(k) + len(v) for _, _, h in signed for k, v in h) / n
    return [Figures("single" if c == 1 else f"chunk {c}", n, header_bytes[c], *best[c])
            for c in chunks]


def main(n: int = 8_192) -> None:
    print(f"signing, {n:,} records of {VALUE_BYTES} bytes over {len(TOPICS)} topics "
          "(header bytes per record; records per second):")
    for figures in measure(n):
        print(figures.line())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8_192)
