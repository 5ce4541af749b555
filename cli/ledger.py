"""`casetrail verify | verify-store | ledger ...`: the ledger's proofs, offline and through audit.

* ``verify FILE``: checks an export offline: every line's inclusion proof against its signed
  checkpoint, under public keys given with ``--keys`` (one verifier key per line, as
  ``casetrail ledger keys`` prints them) or else those published in the data dir. Exit 0: all
  verified; 1: verification failed; 2: the file cannot be read; 3 (``PENDING_STATUS``):
  nothing failed, but some events were recorded after their log's newest checkpoint and are
  not yet provable. Read a line at a time: a hostile line fails naming it.
* ``verify-store SERVICE``: recomputes the service's tree from its stored events and names the
  first bad position (``--checkpoint FILE``: also check against a checkpoint kept elsewhere;
  ``--keys FILE``: the public keys as ``casetrail ledger keys`` prints them, else the service's
  key port or ``<data dir>/<service>/ledger.pub``; without a key it says the signatures were
  not checked). With a key it also checks against the newest checkpoint the log published
  (its ``ledger.checkpoint`` file embedded, the checkpoints topic distributed).
* ``ledger checkpoint|prove|consistency|keys``: audit's answers (GetLedgerCheckpoint,
  ProveEventInclusion, ProveLogConsistency, ListLedgerKeys).
* ``ledger public-keys DIR``: the services' public keys computed from their private key files
  ``DIR/<service>.key`` (the chart's ``secrets.signingKeys`` layout), offline: what audit is
  given to witness the logs (chart ``ledger.publicKeys``, ``CASETRAIL_LEDGER_PUBLIC_KEYS``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from casetrail.audit.v1 import audit_pb2
from cli.present import shown
from cli.rpc import answered

if TYPE_CHECKING:
    from casetrail_platform.infrastructure import Infrastructure
    from casetrail_platform.ledger.note import Checkpoint, KeySchedule, LogKeys

PENDING_STATUS = 3
"""``verify FILE``: every line verified but those not yet provable (1: verification failed)."""

MAX_TREE_SIZE = 2**63 - 1
"""The protos' int64 tree sizes."""

MAX_CHECKPOINT_BYTES = 16 * 1024
"""``--checkpoint``: a signed note is a few lines and a signature line per signer."""

MAX_VERIFY_WORKERS = 64
"""``verify-store --workers``: each is a process and a database connection."""


def run(options: argparse.Namespace) -> int:
    if options.command == "verify":
        return _verify_export(options)
    if options.command == "verify-store":
        return asyncio.run(_verify_store(options))
    if options.ledger_command == "public-keys":
        return _public_keys(options)
    if options.ledger_command == "rotate":
        return asyncio.run(_rotate(options))
    return answered("audit", options.timeout, lambda: asyncio.run(_ask_audit(options)))


def _verifiers(options: argparse.Namespace) -> dict[str, KeySchedule]:
    from casetrail_platform.ledger.note import NoteError, parse_verifiers

    if options.keys:
        text = _keys_file(Path(options.keys), f"--keys {options.keys}")
    else:
        # The services' own files, each bounded as --keys is: a huge one (or a device put
        # there) would hold the command as long as it takes to read.
        published = sorted(Path(options.data_dir).glob("*/ledger.pub"))
        text = "\n".join(_keys_file(path, str(path)) for path in published)
    try:
        verifiers = parse_verifiers(text)
    except NoteError as error:
        raise SystemExit(f"bad public key: {error}") from None
    if not verifiers:
        raise SystemExit("no public keys: pass --keys FILE (see `casetrail ledger keys`)")
    return verifiers


def _keys_file(path: Path, named: str) -> str:
    """A file of public keys (``--keys``, a service's ``ledger.pub``), read within
    ``MAX_KEYS_FILE_BYTES``; one that cannot be read stops the command naming it."""
    from casetrail_platform.ledger.note import MAX_KEYS_FILE_BYTES
    from casetrail_platform.private_files import small_text

    try:
        return small_text(path, MAX_KEYS_FILE_BYTES)
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise SystemExit(f"{named}: cannot read the public keys: {error}") from None


def _verify_export(options: argparse.Namespace) -> int:
    from casetrail_platform.ledger.export_check import verify_lines
    from casetrail_platform.ledger.export_file import export_lines
    from events.catalog_registry import default_registry

    verifiers = _verifiers(options)
    try:
        # Line by line: an export of any size (or a hostile one line long) in bounded memory.
        with open(options.file, "rb") as file:
            result = verify_lines(export_lines(file), default_registry(), verifiers)
    except OSError as error:
        print(f"{options.file}: cannot read the export: {error.strerror}", file=sys.stderr)
        return 2
    for problem in result.problems:
        print(shown(problem), file=sys.stderr)  # it quotes the file's lines
    if result.more_problems:
        print(f"and {result.more_problems} more problems", file=sys.stderr)
    for origin, size in sorted(result.checkpoints.items()):
        print(shown(f"{origin}: proven in its signed tree of {size} events"))
    print(f"{result.verified} of {result.lines} events verified")
    if result.withheld:
        # Shown in part to this reader: vouched for by audit, not provable by the ledger.
        print(
            f"{result.withheld} lines withheld from this reader, vouched for by audit's signed"
            " statement"
        )
    for origin, alarm in sorted(result.alarms.items()):
        # Exporting again proves nothing here until an operator has dealt with the alarm.
        print(
            shown(
                f"{result.pending_under_alarm[origin]} events of {origin} not provable: {alarm};"
                " they become provable only once the alarm is dealt with"
            )
        )
    waiting = result.pending - sum(result.pending_under_alarm.values())
    if waiting:
        print(
            f"{waiting} events recorded after their log's newest checkpoint: not yet"
            f" provable; export again after the next checkpoint (at most"
            f" {result.sign_every:g} seconds)"
        )
    if result.statements:
        # One statement a page: said once, with the span of their times.
        cases = ", ".join(sorted({case_id for case_id, _ in result.statements}))
        times = sorted(at for _, at in result.statements)
        span = times[0] if times[0] == times[-1] else f"{times[0]} to {times[-1]}"
        print(shown(f"pending events named by audit's signed statement for case {cases} at {span}"))
    if result.extent is not None:
        print(
            shown(
                f"exported whole, as audit's signed statement for case {result.extent[0]} at"
                f" {result.extent[1]} states its lines and the end of each stream"
            )
        )
    if result.counted_only:
        # A statement signed before audit named those lines: what it vouches for is less.
        print(
            "audit's statement is of the older, count-only form: "
            + shown(", ".join(result.counted_only))
            + " (of several cases) checked by their line count alone, not by which lines;"
            " export again for a statement naming them"
        )
    if result.ok:
        return 0
    return PENDING_STATUS if result.only_pending else 1


async def _verify_store(options: argparse.Namespace) -> int:
    from casetrail_platform.errors import StorageConfigurationError
    from casetrail_platform.ledger.directory import LedgerDirectory
    from casetrail_platform.ledger.hosting import open_ledger_store
    from casetrail_platform.ledger.note import open_checkpoint
    from casetrail_platform.ledger.port import LedgerNotCreated, LedgerUnreadable
    from casetrail_platform.ledger.verify import VerificationWorkerDied, verify_store
    from casetrail_platform.private_files import small_text
    from cli.stores import has_local_store, infrastructure, where_stored

    infra = infrastructure(options)
    if not has_local_store(infra, options.service):
        print(
            f"{options.service} has no store in {where_stored(infra, options.service)}",
            file=sys.stderr,
        )
        return 2
    directory = LedgerDirectory(infra)
    if options.keys:
        # The keys as audit publishes them: a process's own key file need not be at hand here.
        origin = directory.origin(options.service)
        verifier: LogKeys | None = _verifiers(options).get(origin)
        if verifier is None:
            print(f"{options.keys} holds no public key named {origin}", file=sys.stderr)
            return 2
    else:
        verifier = await _published_keys(infra, options.service)
    trusted = []
    if options.checkpoint:
        if verifier is None:
            print("no public key for the service: cannot open --checkpoint", file=sys.stderr)
            return 2
        try:
            text = await asyncio.to_thread(
                small_text, Path(options.checkpoint), MAX_CHECKPOINT_BYTES
            )
            trusted.append(open_checkpoint(text, verifier))
        except (OSError, UnicodeDecodeError, ValueError) as error:  # NoteError among them
            print(f"--checkpoint {options.checkpoint}: {error}", file=sys.stderr)
            return 2
    if verifier is not None:
        # Read before the ledger: a log publishes a checkpoint only of leaves it stored, so a
        # ledger read after covers it unless its tables were emptied or rolled back.
        published = await _published_mark(infra, options.service, verifier)
        if published is None:
            return 1
        trusted.extend(published)
    try:
        # An auditor's check writes nothing: no table created, granted or migrated.
        store = await open_ledger_store(infra, options.service, read_only=True)
    except LedgerNotCreated:
        print(
            f"{options.service} has no ledger yet: its service creates it when it starts",
            file=sys.stderr,
        )
        return 2
    except LedgerUnreadable as error:
        print(f"{options.service}: {error}", file=sys.stderr)  # not what was signed: failed
        return 1
    except StorageConfigurationError as error:
        print(f"{options.service}: {error}", file=sys.stderr)
        return 2
    try:
        result = await verify_store(store, verifier, trusted=trusted, workers=options.workers)
    except VerificationWorkerDied as error:
        print(f"{options.service}: {error}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(
        f"{options.service}: {result.leaves} events hashed, ledger holds {result.ledger_size},"
        f" {result.checkpoints_checked} checkpoints checked"
    )
    for note in result.notes:
        print(shown(note))
    if result.ok and verifier is None:
        print(
            "OK: the store is the tree its checkpoints record; their signatures were not checked"
            " (no public key: pass --keys FILE, see `casetrail ledger keys`)"
        )
        return 0
    if result.ok:
        print("OK: the store is the tree its checkpoints signed")
        return 0
    where = result.first_bad_position
    problem = str(result.problem)  # set: the result is not ok
    print(shown(f"TAMPERED at position {where}: {problem}" if where else problem))
    return 1


async def _published_keys(infra: Infrastructure, service: str) -> LogKeys | None:
    """The service's log keys as published where the command runs (``LedgerDirectory.verifier``:
    the keys file configured as audit's, the key port or its ``ledger.pub``); ``None`` when
    none is. A configured keys file that cannot be read stops the command naming it, as an
    unreadable ``--keys`` does, and so does a ``ledger.pub`` there holding no one log's keys
    (taken for no key, the store was said OK with no signature checked), never a traceback."""
    from casetrail_platform.ledger.directory import LedgerDirectory, PublishedKeysUnreadable
    from casetrail_platform.ledger.note import NoteError

    try:
        return await LedgerDirectory(infra).verifier(service)
    except PublishedKeysUnreadable as error:
        raise SystemExit(str(error)) from None
    except (OSError, NoteError) as error:
        raise SystemExit(
            f"CASETRAIL_LEDGER_PUBLIC_KEYS {infra.ledger_public_keys}: cannot read the public"
            f" keys: {error}"
        ) from None


async def _published_mark(
    infra: Infrastructure, service: str, verifier: LogKeys
) -> list[Checkpoint] | None:
    """The newest checkpoint the service's log published under its current key, read as the
    log reads it before it signs (``LedgerLog.check_published``): embedded, its
    ``ledger.checkpoint`` file; distributed, the checkpoints topic. Outside the database, its
    rows emptied or rolled back cannot take it back: without it, a ledger emptied over an
    edited store verified as OK. ``[]`` when none was published; ``None`` (told) when the
    record cannot be read: an unknown mark is never taken for no mark."""
    from casetrail_platform.ledger.hosting import checkpoint_record
    from casetrail_platform.ledger.note import current_key

    record = checkpoint_record(infra, service)
    try:
        mark = await record.newest(current_key(verifier))
    except (OSError, TimeoutError, LookupError, ValueError) as error:
        # A broker out of reach is told by the command's handler (exit 1), as for a database.
        print(f"{service}: the checkpoints it published cannot be read: {error}", file=sys.stderr)
        return None
    finally:
        await record.stop()
    if mark is None:
        print(f"{service}: its log has published no checkpoint under its current key")
        return []
    print(f"{service}: its log published a checkpoint of {mark.size} events; checked as trusted")
    return [mark]


async def _rotate(options: argparse.Namespace) -> int:
    """Hand the service's log over to the key in ``--new-key`` (``LedgerLog.hand_over``):
    one checkpoint signed by both keys, published then stored; then the new key installed
    (embedded default) and its keys-file line printed, for audit's keys file (chart
    ``ledger.publicKeys``). The service must be stopped: a running process would go on
    signing with the old key, whose notes past the handover no verifier then accepts."""
    from datetime import UTC, datetime

    from casetrail_platform.ledger.hosting import (
        checkpoint_record,
        install_rotated_key,
        key_path,
        open_ledger,
    )
    from casetrail_platform.ledger.keys import FileSigner
    from casetrail_platform.ledger.log import (
        CheckpointNotPublished,
        HandoverRefused,
        LedgerTampered,
    )
    from casetrail_platform.ledger.note import ScheduledKey, origin_of, schedule_of
    from casetrail_platform.locking.serving import alone
    from cli.stores import has_local_store, infrastructure, where_stored

    infra = infrastructure(options)
    service = options.service
    if not has_local_store(infra, service):
        print(f"{service} has no store in {where_stored(infra, service)}", file=sys.stderr)
        return 2
    new_key = Path(options.new_key)
    if not await asyncio.to_thread(new_key.is_file):
        # FileSigner would generate a key there: a typo must not become a key nobody kept.
        print(f"--new-key {new_key}: no such file", file=sys.stderr)
        return 2
    old_key = key_path(infra.data_dir, service)
    if infra.ledger_signer is None and not await asyncio.to_thread(old_key.is_file):
        # Nor the log's own key: FileSigner would generate one there and publish it over
        # ledger.pub, the old key's only record beside the store. A lost key is no rotation.
        print(f"{old_key}: no such file: the log's key, which signs the handover", file=sys.stderr)
        return 2
    try:
        new_signer = await asyncio.to_thread(FileSigner, origin_of(infra.agency, service), new_key)
    except (OSError, ValueError) as error:
        print(f"--new-key {new_key}: {error}", file=sys.stderr)
        return 2
    published = await _published_keys(infra, service)
    new_verifier = await new_signer.verifier()
    # The retired keys (the current one is LedgerLog.hand_over's to refuse): a key signs one
    # range of its log (note.parse_verifiers refuses one listed again, else a retired key could
    # extend the log), so handed back to one the log had a schedule no keys file holds, and
    # ledger.pub read as no key at all.
    for kept in schedule_of(published).keys[:-1] if published is not None else ():
        if kept.verifier == new_verifier:
            print(
                f"--new-key {new_key}: the log was signed with this key before"
                f" ({kept.sizes()}): rotate to a key it never had",
                file=sys.stderr,
            )
            return 2
    async with alone(infra, service, "ledger") as nobody_serves:
        if not nobody_serves:
            print(
                f"{service} is running: stop it first (it would go on signing with the old key)",
                file=sys.stderr,
            )
            return 2
        if infra.kafka is not None and not await _ledger_topic_ready(infra, service):
            return 1
        ledger = await open_ledger(infra, service)
        record = checkpoint_record(infra, service)
        ledger.publish_to(record)
        try:
            handover = await ledger.hand_over(new_signer)
        except (HandoverRefused, LedgerTampered, CheckpointNotPublished, ValueError) as error:
            print(f"{service}: not rotated: {error}", file=sys.stderr)
            return 1
        finally:
            await record.stop()
            await ledger.store.close()
        at = datetime.now(UTC).replace(microsecond=0)
        line = str(ScheduledKey(await new_signer.verifier(), handover.size, at))
        print(f"{service}: handed over at tree size {handover.size}; the new key signs from there")
        print(line)
        if infra.ledger_signer is None:
            try:
                retired = await asyncio.to_thread(
                    install_rotated_key, infra.data_dir, service, new_key, line
                )
            except (OSError, ValueError) as error:  # NoteError: a ledger.pub no keys file
                print(
                    f"the new key is not installed ({error}): put {new_key} where {service}"
                    " reads its key (its Secret) before it starts again",
                    file=sys.stderr,
                )
                return 1
            print(f"installed; the old key is kept as {retired}")
    print(
        "add the line above to audit's keys file (CASETRAIL_LEDGER_PUBLIC_KEYS, chart"
        " ledger.publicKeys), after the old key's"
    )
    return 0


async def _ledger_topic_ready(infra: Infrastructure, service: str) -> bool:
    """Create the checkpoints topic if missing, as every service's start does
    (``ensure_topics``): a store rotated before a service ever ran on this broker has none, and
    the handover is published before it is stored. ``False`` (told) when Kafka refuses."""
    from aiokafka.errors import KafkaError

    from casetrail_platform.bus.errors import TopicConfigurationError
    from casetrail_platform.bus.topics import TopicSettings, create_topics

    assert infra.kafka is not None
    topic = (infra.topics or TopicSettings()).ledger_topic()
    try:
        await create_topics(infra.kafka, [topic])
    except (KafkaError, OSError, TopicConfigurationError) as error:
        print(f"{service}: not rotated: {topic.name} not ready: {error!r}", file=sys.stderr)
        return False
    return True


def _public_keys(options: argparse.Namespace) -> int:
    from casetrail_platform.ledger.keys import published_key
    from casetrail_platform.ledger.note import origin_of
    from cli.main import SERVICES

    directory = Path(options.directory)
    found = 0
    for service in SERVICES:
        path = directory / f"{service}.key"
        if not path.exists():
            print(f"{path}: missing, {service} left out", file=sys.stderr)
            continue
        try:
            print(published_key(origin_of(options.agency, service), path))
        except ValueError as error:
            raise SystemExit(f"{path}: {error}") from None
        except OSError as error:  # a directory, or not readable
            raise SystemExit(f"{path}: cannot read the key: {error.strerror}") from None
        found += 1
    return 0 if found else 2


async def _ask_audit(options: argparse.Namespace) -> int:
    from cli.audit import _audit, _credentials
    from cli.rpc import query

    context = query(options.purpose)
    metadata = _credentials(options)
    async with _audit(options) as audit:
        if options.ledger_command == "checkpoint":
            answer = await audit.GetLedgerCheckpoint(
                audit_pb2.GetLedgerCheckpointRequest(context=context, service=options.service),
                metadata=metadata,
            )
            if answer.HasField("latest"):
                print(answer.latest.signed_note, end="")
            else:
                print(f"{options.service} has signed no checkpoint yet", file=sys.stderr)
            if answer.HasField("witnessed"):
                print(f"audit verified the tree of {answer.witnessed.tree_size} events")
            if answer.HasField("alarm"):
                print(shown(f"ALARM: {answer.alarm.problem}"), file=sys.stderr)
                return 1
        elif options.ledger_command == "prove":
            proof = await audit.ProveEventInclusion(
                audit_pb2.ProveEventInclusionRequest(
                    context=context, event_id=options.event_id, tree_size=options.tree_size
                ),
                metadata=metadata,
            )
            print(shown(f"{proof.service} position {proof.position} (leaf {proof.position - 1})"))
            print(f"leaf hash {base64.b64encode(proof.leaf_hash).decode()}")
            for item in proof.proof:
                print(f"  {base64.b64encode(item).decode()}")
            print(proof.checkpoint.signed_note, end="")
        elif options.ledger_command == "consistency":
            answer_c = await audit.ProveLogConsistency(
                audit_pb2.ProveLogConsistencyRequest(
                    context=context,
                    service=options.service,
                    first_size=options.first_size,
                    second_size=options.second_size,
                ),
                metadata=metadata,
            )
            print(f"root {options.first_size}: {base64.b64encode(answer_c.first_root).decode()}")
            print(f"root {options.second_size}: {base64.b64encode(answer_c.second_root).decode()}")
            for item in answer_c.proof:
                print(f"  {base64.b64encode(item).decode()}")
        else:
            keys = await audit.ListLedgerKeys(
                audit_pb2.ListLedgerKeysRequest(context=context), metadata=metadata
            )
            for key in keys.keys:
                print(key.verifier_key)
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ledger's subcommands, added to ``casetrail``'s parser (``cli.main``)."""
    from cli.main import SERVICES, _audit, _data_dir, _storage, bounded, sendable

    size = bounded(0, MAX_TREE_SIZE)

    verify = commands.add_parser("verify", help="verify an export's proofs offline")
    verify.add_argument("file")
    verify.add_argument("--keys", help="public keys, one per line (default: the data dir's)")
    verify.add_argument("--data-dir", default=_data_dir())

    verify_store = commands.add_parser(
        "verify-store", help="recompute a service's tree and name the first bad position"
    )
    verify_store.add_argument("service", choices=SERVICES)
    verify_store.add_argument("--checkpoint", help="a signed checkpoint kept elsewhere")
    verify_store.add_argument(
        "--keys", help="public keys, one per line (default: the service's key port or data dir)"
    )
    verify_store.add_argument(
        "--workers",
        type=bounded(1, MAX_VERIFY_WORKERS),
        help="processes reading and hashing a large store side by side (default: the usable"
        " CPUs; 1: this process alone)",
    )
    _storage(verify_store)

    ledger = commands.add_parser("ledger", help="checkpoints and proofs, from audit")
    actions = ledger.add_subparsers(dest="ledger_command", required=True)
    checkpoint = actions.add_parser("checkpoint", help="a service's newest signed checkpoint")
    checkpoint.add_argument("service", choices=SERVICES)
    prove = actions.add_parser("prove", help="the inclusion proof of an event")
    prove.add_argument("event_id", type=sendable)
    prove.add_argument("--tree-size", type=size, default=0)
    consistency = actions.add_parser("consistency", help="a consistency proof of a service's log")
    consistency.add_argument("service", choices=SERVICES)
    consistency.add_argument("first_size", type=size)
    consistency.add_argument("second_size", type=size)
    actions.add_parser("keys", help="every service's public key")
    public_keys = actions.add_parser(
        "public-keys", help="the services' public keys from their private key files, offline"
    )
    public_keys.add_argument("directory", help="holding <service>.key (Ed25519 PEM) files")
    public_keys.add_argument(
        "--agency",
        default=os.environ.get("CASETRAIL_AGENCY", "example-agency"),
        help="the origins' agency (chart ledger.agency)",
    )
    rotate = actions.add_parser(
        "rotate", help="hand a stopped service's log over to a new signing key"
    )
    rotate.add_argument("service", choices=SERVICES)
    rotate.add_argument("--new-key", required=True, help="the new Ed25519 private key (PEM)")
    _storage(rotate)
    for action in (checkpoint, prove, consistency, actions.choices["keys"]):
        _audit(action)
