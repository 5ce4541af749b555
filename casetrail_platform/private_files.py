"""Files that hold secrets or case data (tokens, exports, signing keys): owner-only, and whole
or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def private_replacement(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path``'s new content into: created 0600 beside ``path`` and renamed
    onto it only when the block completes, so an error (a refusal, a stream cut short) leaves
    ``path`` as it was and no partial file behind. The renamed file keeps mode 0600 whatever
    mode an older ``path`` had (a token or an export must not stay world-readable)."""
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
