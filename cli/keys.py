"""`casetrail keys status | new-kek | rotate-kek`: the agency's key-encryption key (KEK).

* ``status``: how many live data keys each KEK wraps (the current one marked).
* ``new-kek PATH``: a new 32-byte KEK file (mode 0600), to rotate to.
* ``rotate-kek``: re-wrap every live data key by the current KEK, in batches; resumable (run
  it again after any stop). Done when no live key is wrapped by another KEK: then the
  previous KEKs can be retired.

The KEKs are those the services use (``CASETRAIL_KEY_ENCRYPTION_KEY_FILE``,
``CASETRAIL_PREVIOUS_KEY_ENCRYPTION_KEY_FILES``) unless ``--kek-file`` / ``--previous-kek-file``
name others. Nothing printed holds key material: KEKs are named by their ``kek_id``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from casetrail_platform.keys.hosting import (
    KEK_FILE_VARIABLE,
    PREVIOUS_KEK_FILES_VARIABLE,
    configured_kek_files,
    data_key_table,
    file_kek,
    keys_dir,
)
from casetrail_platform.keys.port import DataKeyTable, KeyEncryptionKey, KeyUnavailableError
from casetrail_platform.keys.rotation import (
    DEFAULT_BATCH_SIZE,
    RotationProgress,
    rotate_kek,
)
from casetrail_platform.keys.sqlite import KEYS_FILE_NAME
from cli.present import shown
from cli.stores import kek_file_problem, postgres_dsn

MAX_BATCH_SIZE = 100_000
"""The most data keys re-wrapped in one transaction: a larger number failed in the database
(an OverflowError traceback on SQLite) or held one transaction over the whole table."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The key subcommands, added to ``casetrail``'s parser (``cli.main``)."""
    from cli.main import _storage, bounded

    keys = commands.add_parser("keys", help="the agency's key-encryption key: status, rotation")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    status = actions.add_parser("status", help="live data keys per KEK")
    new_kek = actions.add_parser("new-kek", help="create a new KEK file (0600) to rotate to")
    new_kek.add_argument("path")
    rotate = actions.add_parser(
        "rotate-kek",
        help="re-wrap every live data key by the current KEK (resumable)",
        description="Re-wrap every live data key by the current KEK, in batches of one "
        "transaction each. Configure every process with the new KEK as current and the old "
        "ones as previous first; run again after any stop; retire the old KEKs once it "
        "reports done.",
    )
    rotate.add_argument(
        "--batch-size",
        type=bounded(1, MAX_BATCH_SIZE),
        default=DEFAULT_BATCH_SIZE,
        help=f"data keys per transaction, 1 to {MAX_BATCH_SIZE:,} (default {DEFAULT_BATCH_SIZE})",
    )
    for action in (status, rotate):
        _storage(action)
        action.add_argument("--kek-file", help="the current KEK (default: as the services)")
        action.add_argument(
            "--previous-kek-file", action="append", help="a previous KEK (repeatable)"
        )


def run(options: argparse.Namespace) -> int:
    if options.keys_command == "new-kek":
        return _new_kek(Path(options.path))
    try:
        table = _table(options)
    except KeyUnavailableError as error:
        print(f"stopped: {error}; run again once it is reachable", file=sys.stderr)
        return 1
    if table is None:
        return 2
    try:
        kek = _kek(options)
        if options.keys_command == "status":
            return _status(table, kek)
        return _rotate(table, kek, options.batch_size)
    except KeyUnavailableError as error:
        print(f"stopped: {error}; run again once it is reachable", file=sys.stderr)
        return 1
    except OSError as error:  # a KEK file that is a directory, or not readable: named
        print(f"stopped: {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    except ValueError as error:  # a KEK file others may read, or not a KEK (read when first
        # used): its words name the file and the remedy, never key material
        print(f"stopped: {error}", file=sys.stderr)
        return 2
    finally:
        table.close()


def _new_kek(path: Path) -> int:
    if path.exists():
        print(f"{path}: exists already (a KEK is never overwritten)", file=sys.stderr)
        return 2
    try:
        print(file_kek(path).key_id)
    except OSError as error:
        print(f"{path}: cannot write the KEK: {error.strerror}", file=sys.stderr)
        return 2
    return 0


def _table(options: argparse.Namespace) -> DataKeyTable | None:
    """The deployment's data-key table, never created here (``None`` said when missing)."""
    data_dir = Path(options.data_dir).resolve()
    dsn = postgres_dsn(options)
    if dsn is None and not (keys_dir(data_dir) / KEYS_FILE_NAME).exists():
        print(f"no data-key table under {keys_dir(data_dir)}", file=sys.stderr)
        return None
    if dsn is not None:
        from casetrail_platform.keys.postgres import KEYS_SCHEMA, data_key_table_exists

        if not data_key_table_exists(dsn):
            print(f"no data-key table in the database's schema {KEYS_SCHEMA}", file=sys.stderr)
            return None
    return data_key_table(data_dir, dsn)


def _kek(options: argparse.Namespace) -> KeyEncryptionKey:
    current, previous = configured_kek_files(Path(options.data_dir).resolve())
    current_source = KEK_FILE_VARIABLE if os.environ.get(KEK_FILE_VARIABLE) else "the KEK"
    previous_source = PREVIOUS_KEK_FILES_VARIABLE
    if options.kek_file:
        current, current_source = Path(options.kek_file), "--kek-file"
    if options.previous_kek_file:
        previous = [Path(path) for path in options.previous_kek_file]
        previous_source = "--previous-kek-file"
    # Checked here, each file named: a missing file is no outage to wait out (KeyUnavailable-
    # Error's "retry"), and a previous KEK is read only when a key it wrapped is met, so a
    # wrong one passed silently while nothing needed it.
    _kek_file(current, current_source)
    for path in previous:
        _kek_file(path, previous_source)
    # Never created here: rotating to a KEK that no service uses would lock them out.
    return file_kek(current, previous, create=False)


def _kek_file(path: Path, source: str) -> None:
    """Exit (a usage error) naming ``path`` and where it was given unless it is a file."""
    problem = kek_file_problem(path)
    if problem is not None:
        raise SystemExit(f"{source} {path}: {problem}")


def _status(table: DataKeyTable, kek: KeyEncryptionKey) -> int:
    current = kek.key_id
    usage = table.live_keys_by_kek()
    for kek_id, count in sorted(usage.items()):
        current_mark = "  (current)" if kek_id == current else ""
        print(f"{shown(kek_id)}  {count} live data keys{current_mark}")
    if not usage:
        print("no live data keys")
    return 0


def _rotate(table: DataKeyTable, kek: KeyEncryptionKey, batch_size: int) -> int:
    def report(progress: RotationProgress) -> None:
        print(f"re-wrapped {progress.rewrapped} data keys", file=sys.stderr)

    result = rotate_kek(table, kek, batch_size, report)
    changed = f" ({result.changed} destroyed or changed meanwhile, left as they are)"
    print(
        f"re-wrapped {result.rewrapped} data keys by {result.kek_id}"
        + changed * bool(result.changed)
    )
    if result.done:
        print(f"done: every live data key is wrapped by {result.kek_id}; retire the previous KEKs")
        return 0
    for kek_id, count in sorted(result.remaining.items()):
        print(
            f"not done: {count} live data keys still wrapped by {shown(kek_id)}: is a process"
            " still wrapping with it? Configure it as previous everywhere, then run again"
        )
    return 1
