"""The record check of the store consumers (pure logic, and the same check in its own process):
each bad record is refused with its reason, and the checking process answers exactly what the
check answers in the consumer's process. The expected reasons are written out by hand.
"""

from __future__ import annotations

import gc
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumers.checking import CheckWorker, RecordCheck, Refused
from consumers.ftf.projector import DecodeArrival
from consumers.inboxes import DecodeInboxRow
from planr.domain import Agency, Recipient, RecipientClass
from planr.signing import ROUTER, sign_chunk
from scenarios.ftf import ftf_delivery, ftf_history, tfl_delivery
from scenarios.keys import signed
from schemas.names import DELIVERY

TOPIC = "t.deliver.ftf-db"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def items(routing_setup, keys):
    """Twelve deliveries signed in one chunk by the router, then five records to refuse."""
    good = [ftf_delivery(routing_setup, s) for s in ftf_history(random.Random(3), 12)]
    out = list(zip(((TOPIC, v) for v in good),
                   sign_chunk(keys.signer(ROUTER), [(TOPIC, v) for v in good]), strict=True))
    router = keys.signer(ROUTER)
    return [(topic, value, headers) for (topic, value), headers in out] + [
        (TOPIC, None, []),  # a tombstone
        (TOPIC, good[0], []),  # unsigned
        *[(TOPIC, v, h) for v, h in signed(keys.signer(Agency.VSSE.value), TOPIC, [good[1]])],
        *[(TOPIC, v, h) for v, h in signed(router, "t.deliver.other", [good[2]])],  # replayed
        *[(TOPIC, v, h) for v, h in signed(router, TOPIC, [b"\x00\x01 not a record"])],
    ]


EXPECTED_REFUSALS = [
    ("undecodable", None),
    ("unauthenticated", "unsigned"),
    ("unauthenticated", "wrong_signer"),
    ("unauthenticated", "bad_signature"),
]


def test_each_bad_record_is_refused_with_its_reason(routing_setup, keys, items):
    out, seconds = RecordCheck(keys.registry, ROUTER, DecodeArrival(routing_setup.codec))(items)
    assert seconds > 0
    assert len(out) == len(items)
    for decoded, (_, value, _) in zip(out[:12], items[:12], strict=True):
        envelope = routing_setup.codec.decode(value, DELIVERY)
        assert decoded[0] == RecipientClass.FTF_DB.value
        assert decoded[1]["delivery_id"] == envelope["delivery_id"]
        assert decoded[3] is not None
    refused = out[12:]
    assert all(isinstance(r, Refused) for r in refused)
    assert [(r.reason, r.detail_reason) for r in refused[:4]] == EXPECTED_REFUSALS
    assert refused[4].reason == "bad_header"  # not Avro single-object encoding
    assert refused[2].key_id == keys.signer(Agency.VSSE.value).key_id


def test_without_a_decoder_the_check_still_refuses_what_is_not_the_routers(keys, items):
    out, _ = RecordCheck(keys.registry, ROUTER)(items)
    assert out[:12] == [None] * 12
    assert [isinstance(r, Refused) for r in out[12:]] == [True, True, True, True, False]


def test_a_pickled_registry_checks_as_the_original(routing_setup, keys, items):
    copy = pickle.loads(pickle.dumps(keys.registry))
    assert copy.entries == keys.registry.entries
    check = RecordCheck(keys.registry, ROUTER, DecodeArrival(routing_setup.codec))
    again = pickle.loads(pickle.dumps(check))
    assert again(items)[0] == check(items)[0]


async def test_the_checking_process_answers_what_the_check_answers_here(
    routing_setup, keys, items
):
    check = RecordCheck(keys.registry, ROUTER, DecodeArrival(routing_setup.codec))
    async with CheckWorker(check) as worker:
        there, _ = await worker.check(items)
        assert worker.pid is not None
    assert there == check(items)[0]


async def test_the_inbox_rows_decoded_in_the_process_are_those_decoded_here(
    routing_setup, keys
):
    topic = "t.deliver.tfl.brussel"
    values = [tfl_delivery(routing_setup, s) for s in ftf_history(random.Random(4), 8)]
    items = [(topic, v, h) for v, h in signed(keys.signer(ROUTER), topic, values)]
    check = RecordCheck(keys.registry, ROUTER, DecodeInboxRow(routing_setup.codec))
    async with CheckWorker(check) as worker:
        there, _ = await worker.check(items)
    here, _ = check(items)
    assert there == here
    brussel = str(Recipient(RecipientClass.TFL, "brussel"))
    assert [row["recipient"] for row, _ in here] == [brussel] * 8
    assert not any(retraction for _, retraction in here)


async def test_a_check_worker_left_running_warns(keys):
    worker = CheckWorker(RecordCheck(keys.registry, ROUTER))
    await worker.start()
    with pytest.warns(ResourceWarning, match="unclosed"):
        del worker  # the last reference: its __del__ runs here
    gc.collect()


CONSUMER = """
import asyncio, sys
from pathlib import Path
from consumers.checking import CheckWorker, RecordCheck
from planr.signing import ROUTER, KeyRegistry

async def main():
    async with CheckWorker(RecordCheck(KeyRegistry.load(Path(sys.argv[1])), ROUTER)) as w:
        print(w.pid, flush=True)
        await asyncio.sleep(120)

if __name__ == "__main__":
    asyncio.run(main())
"""


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie that its new parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_the_checking_process_ends_when_its_consumer_is_killed(keys, tmp_path):
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    worker = 0
    with subprocess.Popen([sys.executable, str(script), str(keys.registry_path)],
                          stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}) as consumer:
        try:
            assert consumer.stdout is not None
            worker = int(consumer.stdout.readline())
            assert not gone(worker)
            consumer.kill()  # SIGKILL: no clean-up of any kind in the consumer
            consumer.wait(timeout=10)
            deadline = time.monotonic() + 10
            while not gone(worker) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert gone(worker)
        finally:
            consumer.kill()
            if worker and not gone(worker):  # only if the test failed: leave nothing behind
                os.kill(worker, signal.SIGKILL)
