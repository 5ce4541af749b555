"""The checkpoint-note contract: the records of the ledger-checkpoint topic
(``topics.LEDGER_CHECKPOINTS_TOPIC``), the public record other parties keep. Published in the
AsyncAPI document; the platform signs, publishes and reads them
(``casetrail_platform.ledger.note``, ``casetrail_platform.ledger.publication``).

A record's key is the log's origin; its value the signed note as UTF-8 text: a C2SP
``tlog-checkpoint`` body (origin, tree size, root hash, one a line) in a C2SP ``signed-note``
envelope (the body, a blank line, then a line per signature). The patterns are the form
casetrail writes, in the syntax JSON Schema and Python's ``re`` share; match them whole.
"""

from __future__ import annotations

CONTENT_TYPE = "text/plain; charset=utf-8"
"""The ``content-type`` header of every record."""
ORIGIN_PATTERN = r"casetrail/[a-z0-9][a-z0-9._-]{0,62}/[a-z][a-z0-9_-]{0,62}"
"""A log's origin, ``casetrail/<agency>/<service>``: the record's key, the note's first line
and the name of the key that signs it."""
TREE_SIZE_PATTERN = r"0|[1-9][0-9]{0,18}"
_ROOT_HASH_PATTERN = r"[A-Za-z0-9+/]{43}="
"""A SHA-256 hash (32 bytes) in standard base64."""
_SIGNATURE_LINE_PATTERN = r"\u2014 [^\s+]+ [A-Za-z0-9+/]+={0,2}\n"
NOTE_PATTERN = (
    rf"{ORIGIN_PATTERN}\n(?:{TREE_SIZE_PATTERN})\n{_ROOT_HASH_PATTERN}\n\n"
    rf"(?:{_SIGNATURE_LINE_PATTERN})+"
)
NOTE_FORMAT = (
    "A signed note (C2SP signed-note) holding a checkpoint (C2SP tlog-checkpoint) in UTF-8: "
    "the log's origin (the record's key), its tree size in decimal and its root hash (the "
    "RFC 9162 Merkle tree of the log's events, SHA-256) in standard base64, each on its own "
    "line; a blank line; then one line per signature: an em dash (U+2014), a space, the key's "
    "name (the origin), a space and the base64 of the 4-byte key id followed by the Ed25519 "
    "signature of the body. A note signed at a key rotation carries two signature lines, the "
    "retiring key's and its successor's. Verify it with the log's published verifier key "
    "(`<name>+<key id>+<base64 key>`, the form Go's golang.org/x/mod/sumdb/note reads)."
)
