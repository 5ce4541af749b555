"""Checkpoints as C2SP ``tlog-checkpoint`` bodies in C2SP ``signed-note`` envelopes.

A checkpoint body is three lines: the log's origin (``casetrail/<agency>/<service>``), the tree
size in decimal, and the root hash in standard base64. A signed note is the body, a blank line,
then one line per signature: an em dash, a space, the key name, a space, and the base64 of the
key id (4 bytes) followed by the signature. For Ed25519 (algorithm byte 0x01) the key id is the
first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key) and the signature covers the body.

A verifier key is written ``<name>+<key id, 8 hex digits>+<base64(0x01 || public key)>``, the
form Go's ``golang.org/x/mod/sumdb/note.NewVerifier`` reads; that is what casetrail publishes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from casetrail_platform.ledger.merkle import HASH_SIZE, Hash
from casetrail_platform.private_files import small_text
from events.checkpoint_notes import ORIGIN_PATTERN, TREE_SIZE_PATTERN

ED25519 = 0x01
_NAME = re.compile(r"^[^\s+]+$")
_SIGNATURE_LINE = re.compile(r"^\u2014 (\S+) (\S+)$")
_ORIGIN = re.compile(ORIGIN_PATTERN)
_SIZE = re.compile(TREE_SIZE_PATTERN)
"""ASCII digits as Go's ``strconv.ParseUint`` reads them (``str.isdigit`` also takes "١٢",
read as 12, and "²", which ``int`` refuses with a bare ValueError)."""
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(ValueError):
    """A note or checkpoint that is malformed or whose signature does not verify."""


MAX_KEYS_FILE_BYTES = 64 * 1024
"""A keys file (``--keys``, a service's ``ledger.pub``, audit's configured one): a verifier key
is a line of about 100 characters, one per service and key kept for rotation; a file larger
than this is not one (read whole, a device or a huge file held the reader, or its memory, for
as long as it lasted)."""


def read_keys_file(path: Path) -> str:
    """A keys file's text within ``MAX_KEYS_FILE_BYTES``; ``NoteError`` naming the file when it
    is larger or not text (``OSError`` when it cannot be read)."""
    try:
        return small_text(path, MAX_KEYS_FILE_BYTES)
    except ValueError as error:  # UnicodeDecodeError included
        raise NoteError(f"{path.name}: {error}") from None


def origin_of(agency: str, service: str) -> str:
    origin = f"casetrail/{agency}/{service}"
    # fullmatch: an anchored match's "$" let a final line feed through, ending the note's line.
    if not _ORIGIN.fullmatch(origin):
        raise ValueError(f"origin {origin!r}: agency and service must be lower-case names")
    return origin


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: Hash

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint is origin, size and root hash, each on its own line")
        origin, size_text, root_text = lines[0], lines[1], lines[2]
        if not origin:
            raise NoteError("checkpoint origin is empty")
        if not _SIZE.fullmatch(size_text):
            raise NoteError(f"checkpoint tree size {size_text!r} is not a decimal number")
        try:
            root = base64.b64decode(root_text, validate=True)
        except ValueError:  # binascii.Error, or a letter beyond ASCII
            raise NoteError("checkpoint root hash is not base64") from None
        if len(root) != HASH_SIZE:
            raise NoteError(f"checkpoint root hash has {len(root)} bytes, not {HASH_SIZE}")
        return cls(origin, int(size_text), root)


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """The published form of a public key (Go: ``note.NewVerifier`` accepts it)."""
    if not _NAME.match(name):
        raise ValueError(f"key name {name!r} must not be empty nor hold spaces or '+'")
    encoded = base64.b64encode(bytes([ED25519]) + public_key).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


@dataclass(frozen=True, slots=True)
class Verifier:
    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)  # base64 may hold "+" too
        if len(parts) != 3:
            raise NoteError("a verifier key is name+keyid+base64 key")
        name, id_hex, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:  # binascii.Error, or a letter beyond ASCII
            raise NoteError("verifier key is not base64") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("verifier key is not an Ed25519 key")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != id_hex.lower():
            raise NoteError("verifier key id does not match its name and key")
        return verifier

    def __str__(self) -> str:
        return verifier_key(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class ScheduledKey:
    """One key of a log's schedule: it signs the checkpoints of size ``start`` up to ``end``
    (inclusive: the handover checkpoint of size ``end`` carries both keys' signatures; ``None``:
    the current key). ``at`` is when it took over, for people: validity is by size, which is
    what a checkpoint signs (its body has no time)."""

    verifier: Verifier
    start: int = 0
    at: datetime | None = None
    end: int | None = None

    def sizes(self) -> str:
        return (
            f"sizes {self.start} to {self.end}"
            if self.end is not None
            else f"sizes from {self.start}"
        )

    def __str__(self) -> str:
        """Its keys-file line."""
        if self.at is None:
            return str(self.verifier)
        return f"{self.verifier} from={self.start} at={_rfc3339(self.at)}"


@dataclass(frozen=True, slots=True)
class KeySchedule:
    """The keys of one log in the order they signed (a keys file's lines under one name)."""

    keys: tuple[ScheduledKey, ...]

    @property
    def name(self) -> str:
        return self.keys[0].verifier.name

    @property
    def current(self) -> Verifier:
        """The key that signs now: the last one."""
        return self.keys[-1].verifier

    def valid_for(self, size: int) -> list[Verifier]:
        """The key(s) whose range holds ``size``: two at a handover size, else one (none below
        the first key's start)."""
        return [
            key.verifier
            for key in self.keys
            if key.start <= size and (key.end is None or size <= key.end)
        ]

    def __str__(self) -> str:
        """The keys-file lines of the schedule."""
        return "".join(f"{key}\n" for key in self.keys)


LogKeys = Verifier | KeySchedule
"""What a note of a log is opened with: one key (valid for every size) or a schedule."""


def schedule_of(keys: LogKeys) -> KeySchedule:
    return keys if isinstance(keys, KeySchedule) else KeySchedule((ScheduledKey(keys),))


def current_key(keys: LogKeys) -> Verifier:
    """The key that signs a log now (for notes that have no size: audit's statements)."""
    return keys if isinstance(keys, Verifier) else keys.current


_RANGE = re.compile(r"from=(0|[1-9][0-9]{0,18}) at=(\S+)")


def _rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _scheduled(line: str) -> ScheduledKey:
    key, _, rest = line.strip().partition(" ")
    verifier = Verifier.parse(key)
    if not rest:
        return ScheduledKey(verifier)
    match = _RANGE.fullmatch(rest.strip())
    if match is None:
        raise NoteError("after the key comes nothing or ' from=<tree size> at=<RFC 3339 time>'")
    try:
        at = datetime.fromisoformat(match.group(2))
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise NoteError(f"at={match.group(2)[:40]!r} is not an RFC 3339 time with its offset")
    return ScheduledKey(verifier, int(match.group(1)), at.astimezone(UTC))


def parse_verifiers(text: str) -> dict[str, KeySchedule]:
    """Verifier keys one per line (``casetrail ledger keys``' output), as a schedule per log
    (``KeySchedule``): a line is the key, then optionally `` from=<N> at=<RFC 3339 time>``
    (without: from 0). Blank lines are skipped and a line repeated counts once; a bad line is
    refused naming it, and so are a second key of a log without a range (the last one silently
    replaced the first, so notes the first signed failed as "no signature" with both keys
    given), a key listed twice with other ranges, and ranges out of order or overlapping: each
    key of a log starts at a larger size than the one listed before it, whose range it ends
    (a range is the sizes a key may sign: a file that let two keys sign one size other than
    their handover would let a retired key extend the log)."""
    found: dict[str, list[tuple[int, ScheduledKey]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            key = _scheduled(line)
        except NoteError as error:
            raise NoteError(f"line {number}: {error}") from None
        listed = found.setdefault(key.verifier.name, [])
        if any(earlier == key for _, earlier in listed):
            continue
        for earlier_number, earlier in listed:
            if earlier.verifier == key.verifier:
                raise NoteError(
                    f"line {number}: the key of line {earlier_number} again, with another range"
                )
        if listed:
            last_number, last = listed[-1]
            if key.at is None and last.at is None:
                raise NoteError(
                    f"line {number}: a second key for {key.verifier.name} (line"
                    f" {last_number}): give the one key that signed the notes to check, or"
                    " each key with its range (from=<tree size> at=<time>)"
                )
            if key.start <= last.start:
                which = "overlaps" if key.start == last.start else "is out of order after"
                raise NoteError(
                    f"line {number}: the range of this key of {key.verifier.name}"
                    f" (from={key.start}) {which} the one of line {last_number}"
                    f" (from={last.start}): list a log's keys in the order they signed"
                )
        listed.append((number, key))
    schedules = {}
    for name, listed in found.items():
        keys = [key for _, key in listed]
        ended = [
            ScheduledKey(key.verifier, key.start, key.at, following.start)
            for key, following in pairwise(keys)
        ]
        schedules[name] = KeySchedule((*ended, keys[-1]))
    return schedules


def signature_line(name: str, public_key: bytes, signature: bytes) -> str:
    encoded = base64.b64encode(key_id(name, public_key) + signature).decode()
    return f"\u2014 {name} {encoded}\n"


def _split(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Signed note ``text``'s body and its signature lines' (key name, base64), unchecked."""
    if _CONTROL.search(text):
        # As Go's note.Open: a note another verifier refuses must not pass here.
        raise NoteError("a signed note holds no control characters but line feeds")
    try:
        text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (JSON's "\ud800"): Go's note.Open refuses text not valid UTF-8,
        # and encoding the body to check its signature raised here, past NoteError's catchers.
        raise NoteError("a signed note is UTF-8 text: this one holds a lone surrogate") from None
    body, separator, signatures = text.rpartition("\n\n")
    if not separator or not body:
        raise NoteError("a signed note is a text, a blank line and signature lines")
    if not signatures.endswith("\n"):
        raise NoteError("a signed note ends with a newline")
    signed: list[tuple[str, str]] = []
    for line in signatures[:-1].split("\n"):
        match = _SIGNATURE_LINE.match(line)
        if match is None:
            raise NoteError(f"malformed signature line {line!r}")
        name, encoded = match.groups()
        signed.append((name, encoded))
    return body + "\n", signed


def _decoded(name: str, encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error, or a letter beyond ASCII
        raise NoteError(f"signature of {name} is not base64") from None


MAX_SIGNATURES = 100
"""Go's ``note.Open`` refuses a note with more signature lines (parsing them all is work an
attacker chooses)."""


def open_note(text: str, verifier: Verifier) -> str:
    """The body of signed note ``text`` once ``verifier``'s signature on it checks out.

    Every signature line is read as Go's ``note.Open`` (golang.org/x/mod v0.37) reads it, so
    that no note passes here that Go refuses nor the reverse: each line must be base64 of a key
    id and at least one byte under a name without "+", at most ``MAX_SIGNATURES`` of them; the
    first line of the verifier's key (name and key id) must verify, and later lines of that key
    are dropped unread, as Go drops them (a repeated line changes nothing)."""
    body, signed = _split(text)
    if len(signed) > MAX_SIGNATURES:
        raise NoteError(f"a signed note carries at most {MAX_SIGNATURES} signatures")
    verified = False
    for name, encoded in signed:
        if "+" in name:
            raise NoteError(f"signature key name {name!r} holds a '+'")
        raw = _decoded(name, encoded)
        if len(raw) < 5:
            raise NoteError(f"signature of {name} is shorter than a key id and a signature")
        if verified or name != verifier.name or raw[:4] != verifier.key_id:
            continue
        try:
            if len(raw) != 4 + 64:
                raise InvalidSignature
            Ed25519PublicKey.from_public_bytes(verifier.public_key).verify(raw[4:], body.encode())
        except InvalidSignature:
            raise NoteError(f"the signature of {name} does not verify") from None
        verified = True
    if not verified:
        raise NoteError(f"the note carries no signature by {verifier.name}")
    return body


def open_checkpoint(text: str, keys: LogKeys) -> Checkpoint:
    """The checkpoint signed note ``text`` states, once the key(s) of ``keys`` valid for its
    size verify it: one key, or of a schedule the key whose range holds the size (both at a
    handover size). A note signed only by another key of the schedule is refused as signed by
    a key not valid for its size (a retired key cannot extend the log, nor a new one sign
    below its start)."""
    if isinstance(keys, Verifier):
        return _opened(text, keys)
    size = Checkpoint.parse(_split(text)[0]).size
    valid = keys.valid_for(size)
    if not valid:
        raise NoteError(f"no key of {keys.name} is valid for size {size}")
    checkpoint = None
    for verifier in valid:
        try:
            checkpoint = _opened(text, verifier)
        except NoteError as error:
            for other in keys.keys:
                if other.verifier not in valid and _verifies(text, other.verifier):
                    raise NoteError(
                        f"signed by a key not valid for size {size} ({keys.name}+"
                        f"{other.verifier.key_id.hex()}, valid for {other.sizes()})"
                    ) from None
            raise error from None
    assert checkpoint is not None
    return checkpoint


def _verifies(text: str, verifier: Verifier) -> bool:
    try:
        open_note(text, verifier)
    except NoteError:
        return False
    return True


def _opened(text: str, verifier: Verifier) -> Checkpoint:
    checkpoint = Checkpoint.parse(open_note(text, verifier))
    if checkpoint.origin != verifier.name:
        raise NoteError(
            f"checkpoint origin {checkpoint.origin!r} is not the key's name {verifier.name!r}"
        )
    return checkpoint


def claimed_checkpoint(text: str) -> tuple[Checkpoint, frozenset[tuple[str, bytes]]]:
    """The checkpoint signed note ``text`` states and the keys (name, key id) it claims to be
    signed by, **unverified**: for comparing a note with another of the same signer, never
    for trusting it."""
    body, signed = _split(text)
    keys = frozenset((name, _decoded(name, encoded)[:4]) for name, encoded in signed)
    return Checkpoint.parse(body), keys


def newest_verified(notes: Iterable[str], verifier: Verifier) -> Checkpoint | None:
    """The largest checkpoint among ``notes`` signed by ``verifier``'s key for its origin; any
    other note (another log, another key, another run's key under the same name, malformed)
    is ignored: it says nothing about this log."""
    newest = None
    for text in notes:
        try:
            checkpoint = open_checkpoint(text, verifier)
        except NoteError:
            continue
        if newest is None or checkpoint.size > newest.size:
            newest = checkpoint
    return newest
