"""casetrail's proofs and checkpoints, checked by code nobody on this project wrote.

``goverifier/`` is a small Go program over ``golang.org/x/mod/sumdb/tlog`` (CheckRecord,
CheckTree), ``golang.org/x/mod/sumdb/note`` (signed notes) and
``github.com/transparency-dev/merkle/proof``; it is built here from the Go module proxy, into
``~/.cache/casetrail/ledger-goverifier/`` (outside the repository) by tests/support/goverifier.py,
as ``make test`` does.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.keys import FileSigner, handover_note
from casetrail_platform.ledger.merkle import Hash, RootAccumulator
from casetrail_platform.ledger.note import Checkpoint, origin_of
from events.topics import LEDGER_CHECKPOINTS_TOPIC
from tests.support.goverifier import GoMissing, build_goverifier
from tests.support.ledger import GO_ACCEPTS, append_notes, signature_variants
from tests.support.servers import kafka_bootstrap, server_missing, servers_required

MAX_SIZE = 1024


@pytest.fixture(scope="module")
def goverifier() -> Path:
    try:
        return build_goverifier()
    except GoMissing as missing:
        if servers_required():
            pytest.fail(str(missing))
        pytest.skip(str(missing))


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def run(binary: Path, requests: list[dict[str, object]]) -> list[str]:
    text = "".join(json.dumps(request) + "\n" for request in requests)
    done = subprocess.run(
        [str(binary)], input=text, capture_output=True, text=True, check=True, timeout=600
    )
    answers = done.stdout.splitlines()
    assert len(answers) == len(requests)
    return answers


class Tree:
    """An in-memory ledger of ``size`` leaves: every complete subtree stored, like a ledger."""

    def __init__(self, size: int) -> None:
        self.leaves = [merkle.leaf_hash(b"event %d" % i) for i in range(size)]
        self.subtrees: dict[merkle.SubtreeKey, Hash] = {}
        accumulator = RootAccumulator()
        self.roots = [merkle.EMPTY_ROOT]
        for leaf in self.leaves:
            self.subtrees.update(accumulator.append_completing(leaf))
            self.roots.append(accumulator.root())

    def source(self, keys: object) -> dict[merkle.SubtreeKey, Hash]:
        return self.subtrees


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree(MAX_SIZE)


@pytest.fixture(scope="module")
def signed(tree: Tree, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """The verifier key and a signed checkpoint for every size 1..MAX_SIZE."""
    import asyncio

    signer = FileSigner(
        origin_of("test-agency", "intake"), tmp_path_factory.mktemp("keys") / "intake.key"
    )

    async def sign_all() -> list[str]:
        return [
            await signer.sign_checkpoint(Checkpoint(signer.name, size, tree.roots[size]))
            for size in range(1, MAX_SIZE + 1)
        ]

    notes = asyncio.run(sign_all())
    return str(asyncio.run(signer.verifier())), notes


def note_requests(signed: tuple[str, list[str]]) -> list[dict[str, object]]:
    vkey, notes = signed
    return [{"kind": "note", "vkey": vkey, "note": note} for note in notes]


def inclusion_requests(tree: Tree) -> Iterator[dict[str, object]]:
    for size in range(1, MAX_SIZE + 1):
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, tree.source)
            yield {
                "kind": "record",
                "size": size,
                "index": index,
                "leaf": b64(tree.leaves[index]),
                "proof": [b64(h) for h in proof],
            }


def consistency_requests(tree: Tree) -> Iterator[dict[str, object]]:
    for size in range(1, MAX_SIZE + 1):
        for old in range(1, size + 1):
            proof = merkle.consistency_proof(old, size, tree.source)
            yield {"kind": "tree", "old": old, "size": size, "proof": [b64(h) for h in proof]}


def test_go_accepts_every_checkpoint_and_every_inclusion_proof_up_to_1024(
    goverifier: Path, tree: Tree, signed: tuple[str, list[str]]
) -> None:
    requests = note_requests(signed) + list(inclusion_requests(tree))
    answers = run(goverifier, requests)
    failures = [(r, a) for r, a in zip(requests, answers, strict=True) if a != "ok"]
    assert not failures, failures[:3]
    assert len(requests) == MAX_SIZE + MAX_SIZE * (MAX_SIZE + 1) // 2


def test_go_accepts_every_consistency_proof_up_to_1024(
    goverifier: Path, tree: Tree, signed: tuple[str, list[str]]
) -> None:
    requests = note_requests(signed) + list(consistency_requests(tree))
    answers = run(goverifier, requests)
    failures = [(r, a) for r, a in zip(requests, answers, strict=True) if a != "ok"]
    assert not failures, failures[:3]


def test_go_rejects_modified_proofs_and_notes(
    goverifier: Path, tree: Tree, signed: tuple[str, list[str]]
) -> None:
    vkey, notes = signed
    flipped_root = notes[99].replace(b64(tree.roots[100]), b64(tree.roots[99]))
    bigger = notes[99].replace("\n100\n", "\n101\n")
    forged_signature = notes[99][:-10] + ("A" if notes[99][-10] != "A" else "B") + notes[99][-9:]
    inclusion = merkle.inclusion_proof(37, 100, tree.source)
    consistency = merkle.consistency_proof(37, 100, tree.source)
    corrupted = bytes([inclusion[2][0] ^ 1]) + inclusion[2][1:]
    base = note_requests(signed)
    bad: list[dict[str, object]] = [
        {"kind": "note", "vkey": vkey, "note": flipped_root},
        {"kind": "note", "vkey": vkey, "note": bigger},
        {"kind": "note", "vkey": vkey, "note": forged_signature},
        {"kind": "note", "vkey": vkey.replace("intake", "planning"), "note": notes[99]},
        # a sibling hash flipped, one dropped, one added, the wrong leaf, the wrong index
        *[
            {"kind": "record", "size": 100, "index": index, "leaf": b64(leaf), "proof": proof}
            for index, leaf, proof in [
                (
                    37,
                    tree.leaves[37],
                    [b64(h) for h in [*inclusion[:2], corrupted, *inclusion[3:]]],
                ),
                (37, tree.leaves[37], [b64(h) for h in inclusion[:-1]]),
                (37, tree.leaves[37], [b64(h) for h in [*inclusion, inclusion[0]]]),
                (37, tree.leaves[38], [b64(h) for h in inclusion]),
                (36, tree.leaves[37], [b64(h) for h in inclusion]),
            ]
        ],
        {"kind": "tree", "old": 37, "size": 100, "proof": [b64(h) for h in consistency[1:]]},
        {"kind": "tree", "old": 38, "size": 100, "proof": [b64(h) for h in consistency]},
        {
            "kind": "tree",
            "old": 37,
            "size": 100,
            "proof": [b64(h) for h in [consistency[0], corrupted, *consistency[2:]]],
        },
    ]
    answers = run(goverifier, base + bad)
    assert all(answer == "ok" for answer in answers[: len(base)])
    rejected = answers[len(base) :]
    assert all(answer.startswith("fail") for answer in rejected), list(
        zip(bad, rejected, strict=True)
    )


def test_go_and_casetrail_read_signature_lines_alike(
    goverifier: Path, signed: tuple[str, list[str]]
) -> None:
    """A repeated, truncated or excess signature line: Go's note.Open and ``open_checkpoint``
    give the same verdict on each (the unit test holds casetrail to these verdicts)."""
    vkey, notes = signed
    variants = signature_variants(notes[4])
    answers = run(
        goverifier, [{"kind": "note", "vkey": vkey, "note": note} for note in variants.values()]
    )
    assert {case: answer == "ok" for case, answer in zip(variants, answers, strict=True)} == (
        GO_ACCEPTS
    ), dict(zip(variants, answers, strict=True))


def test_transparency_dev_merkle_test_vectors(goverifier: Path) -> None:
    """The vectors of github.com/transparency-dev/merkle/testonly, read from the module the
    Go module proxy serves (not copied into this repository)."""
    done = subprocess.run(
        [str(goverifier), "vectors"], capture_output=True, text=True, check=True, timeout=60
    )
    vectors = json.loads(done.stdout)
    leaves = [merkle.leaf_hash(base64.b64decode(item)) for item in vectors["leaf_inputs"]]
    roots = [base64.b64decode(item) for item in vectors["root_hashes"]]
    assert base64.b64decode(vectors["empty_root"]) == merkle.EMPTY_ROOT
    assert len(roots) == len(leaves) + 1
    for size, root in enumerate(roots):
        assert merkle.root_of(leaves[:size]) == root
    # Our proofs over the vector tree verify against the vector roots.
    accumulator = RootAccumulator()
    subtrees: dict[merkle.SubtreeKey, Hash] = {}
    for leaf in leaves:
        subtrees.update(accumulator.append_completing(leaf))
    for size in range(1, len(leaves) + 1):
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, lambda _: subtrees)
            merkle.verify_inclusion(index, size, leaves[index], proof, roots[size])
        for old in range(1, size + 1):
            proof = merkle.consistency_proof(old, size, lambda _: subtrees)
            merkle.verify_consistency(old, size, roots[old], roots[size], proof)


@pytest.mark.kafka
def test_a_fresh_outside_subscriber_of_the_checkpoint_topic_gets_notes_go_accepts(
    goverifier: Path, tmp_path: Path
) -> None:
    """kcat (librdkafka, not casetrail's client) reads ``casetrail.ledger-checkpoints`` from
    the beginning, as another party keeping the checkpoints would; Go opens every note of a
    log with its published key, checks each later tree against the one before (tlog.CheckTree)
    and the first and last event of each (tlog.CheckRecord). The topic may hold other logs'
    notes (other runs, other keys): a subscriber keeps those of the origin it follows."""
    import asyncio

    kcat = shutil.which("kcat")
    if kcat is None:
        # `make test` installs it (make kcat-install); only a developer's machine may skip.
        missing = "kcat is not installed (make kcat-install): no outside Kafka client"
        if servers_required():
            pytest.fail(missing)
        pytest.skip(missing)
    origin = origin_of(f"outside-{os.urandom(4).hex()}", "intake")
    sizes = [1, 2, 3, 4, 8, 9]
    signed = asyncio.run(_signed_on_the_topic(tmp_path, origin, sizes))
    vkey, trees, records = signed

    # From the first record to the end (-e), each as JSON with its key (-J).
    read = ["-C", "-t", LEDGER_CHECKPOINTS_TOPIC, "-o", "beginning", "-e", "-J", "-q"]
    done = subprocess.run(
        [kcat, "-b", kafka_bootstrap(), *read],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    notes = [m["payload"] for m in messages if m.get("key") == origin]

    assert [note.split("\n")[1] for note in notes] == [str(size) for size in sizes]
    requests = [{"kind": "note", "vkey": vkey, "note": note} for note in notes]
    answers = run(goverifier, requests + trees + records)
    assert answers == ["ok"] * len(answers), answers


async def _signed_on_the_topic(
    tmp_path: Path, origin: str, sizes: list[int]
) -> tuple[str, list[dict[str, object]], list[dict[str, object]]]:
    """A log signing at ``sizes``, published on the real topic: its verifier key, and the
    consistency and inclusion requests that Go checks against the notes it read there."""
    from casetrail_platform.bus.topics import TopicSettings, create_topics
    from casetrail_platform.ledger.log import LedgerLog
    from casetrail_platform.ledger.publication import KafkaCheckpointPublisher
    from casetrail_platform.ledger.sqlite import SqliteLedgerStore
    from casetrail_platform.store.sqlite import SqliteEventStore
    from tests.contract.bus_conftest import kafka_test_settings
    from tests.support.sample_events import sample_registry

    settings = kafka_test_settings()
    try:
        await create_topics(settings, [TopicSettings().ledger_topic()])
    except Exception as error:
        server_missing("Kafka", error)
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    ledger_store = await SqliteLedgerStore.open(tmp_path / "ledger.db", tmp_path / "events.db")
    log = LedgerLog(ledger_store, FileSigner(origin, tmp_path / "ledger.key"))
    publisher = KafkaCheckpointPublisher(settings)
    log.publish_to(publisher)
    trees: list[dict[str, object]] = []
    records: list[dict[str, object]] = []
    try:
        previous = 0
        for size in sizes:
            await append_notes(store, size - previous)
            assert (await log.sign()).size == size
            if previous:
                proof = await log.consistency_proof(previous, size)
                trees.append(
                    {
                        "kind": "tree",
                        "old": previous,
                        "size": size,
                        "proof": [b64(h) for h in proof],
                    }
                )
            for position in sorted({1, size}):
                inclusion = await log.inclusion_proof(position, size)
                records.append(
                    {
                        "kind": "record",
                        "size": size,
                        "index": position - 1,
                        "leaf": b64(inclusion.leaf_hash),
                        "proof": [b64(h) for h in inclusion.hashes],
                    }
                )
            previous = size
        return str(await log.verifier()), trees, records
    finally:
        await publisher.stop()
        await ledger_store.close()
        await store.close()


def test_go_follows_a_log_across_its_key_rotation(goverifier: Path, tmp_path: Path) -> None:
    """Go takes the keys file with its ranges (README "Rotating a log's signing key"), opens
    each checkpoint with the key its size names (both at the handover, each alone), checks
    the trees and records across the handover, and refuses a retired key's note past it and
    a new key's note below it."""
    import asyncio

    handover = 8
    tree = Tree(12)
    origin = origin_of("test-agency", "intake")
    old = FileSigner(origin, tmp_path / "old.key")
    new = FileSigner(origin, tmp_path / "new.key")

    async def signed() -> tuple[str, dict[int, str], list[str]]:
        def checkpoint(size: int) -> Checkpoint:
            return Checkpoint(origin, size, tree.roots[size])

        at = "2026-12-05T02:00:00Z"
        keys = f"{await old.verifier()}\n{await new.verifier()} from={handover} at={at}\n"
        notes = {size: await old.sign_checkpoint(checkpoint(size)) for size in range(1, handover)}
        notes[handover] = await handover_note(checkpoint(handover), old, new)
        for size in range(handover + 1, 13):
            notes[size] = await new.sign_checkpoint(checkpoint(size))
        bad = [
            await old.sign_checkpoint(checkpoint(10)),
            await new.sign_checkpoint(checkpoint(5)),
            await old.sign_checkpoint(checkpoint(handover)),
            await new.sign_checkpoint(checkpoint(handover)),
        ]
        return keys, notes, bad

    keys, notes, bad = asyncio.run(signed())
    requests: list[dict[str, object]] = [{"kind": "keys", "keys": keys}]
    requests += [{"kind": "note", "note": note} for note in notes.values()]
    for old_size, size in ((1, 12), (5, 8), (5, 12), (8, 12), (7, 9)):
        proof = merkle.consistency_proof(old_size, size, tree.source)
        requests.append(
            {"kind": "tree", "old": old_size, "size": size, "proof": [b64(h) for h in proof]}
        )
    for size in (5, 8, 12):
        for index in (0, size - 1):
            proof = merkle.inclusion_proof(index, size, tree.source)
            requests.append(
                {
                    "kind": "record",
                    "size": size,
                    "index": index,
                    "leaf": b64(tree.leaves[index]),
                    "proof": [b64(h) for h in proof],
                }
            )

    answers = run(goverifier, requests + [{"kind": "note", "note": note} for note in bad])

    assert answers[: len(requests)] == ["ok"] * len(requests), answers
    assert all(answer.startswith("fail: ") for answer in answers[len(requests) :]), answers
