"""What the views' HTTP server (aiohttp, under Faust) logs of a request it could not read or
answer: the error's type and where it was raised, never its words.

aiohttp logs such an error with its exception, whose message quotes the request's bytes: a
header it cannot parse is repeated whole. A bearer token whose line ends in a stray carriage
return (a token file saved with CRLF line endings, read by ``$(cat ...)``) or holds a control
character was written to the processor's log at ERROR, good for every view, an auditor's for
every caseload, to whoever reads the logs until it expires. So the server logs through
``WordsWithheld``, as the console logs its faults (``services/console/app.py``, ``Faults``).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from pathlib import PurePath
from typing import Any

SERVER_LOGGER = "aiohttp.server"
"""The logger aiohttp's request handler writes to by default: its name is kept, so whatever
a deployment set for it still applies."""


class WordsWithheld(logging.LoggerAdapter[logging.Logger]):
    """A logger for aiohttp's request handler (``handler_args["logger"]``): each record keeps
    its own message (``Error handling request from <peer>``) and tells of its exception only
    its type and where it was raised."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        error = kwargs.pop("exc_info", None)
        if error is True:
            error = sys.exc_info()[1]
        if isinstance(error, BaseException):
            # The record's arguments are formatted into ``msg`` later: a "%" told is a "%".
            msg = f"{msg}: {told(error).replace('%', '%%')}"
        return msg, kwargs


def told(error: BaseException) -> str:
    """``error``'s type and the place it was raised, its words withheld."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {PurePath(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{where} (its words withheld: they may quote the request)"


def server_logger() -> WordsWithheld:
    return WordsWithheld(logging.getLogger(SERVER_LOGGER))
