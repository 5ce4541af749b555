"""What a consumer does with one message, the same for every bus adapter: decode it, call
the handler (retrying transient failures with backoff), or turn it into a dead letter."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum

from events.bus.deadletter import DeadLetter, DeadLetterReason
from events.bus.errors import is_retriable
from events.bus.message import BusMessage
from events.bus.port import Handler
from events.bus.retry import RetryPolicy, sleep_unless_stopped
from events.cloudevents import UndecodableMessageError, from_kafka_binary
from events.errors import InvalidEventError
from events.registry import EventRegistry

log = logging.getLogger(__name__)


class Outcome(Enum):
    HANDLED = "handled"
    DEAD_LETTERED = "dead-lettered"
    ABANDONED = "abandoned"
    """Stop was requested while waiting to retry: leave the message uncommitted."""


@dataclass(frozen=True, slots=True)
class Delivery:
    outcome: Outcome
    attempts: int
    dead_letter: DeadLetter | None = None


@dataclass(frozen=True, slots=True)
class Deliverer:
    group: str
    handler: Handler
    registry: EventRegistry
    policy: RetryPolicy

    async def deliver(self, message: BusMessage, stop: asyncio.Event) -> Delivery:
        try:
            recorded = from_kafka_binary(
                message.key, list(message.headers), message.value, self.registry
            )
        except UndecodableMessageError as error:
            return self._dead(message, DeadLetterReason.UNDECODABLE, error, attempts=0)
        except InvalidEventError as error:
            return self._dead(message, DeadLetterReason.INVALID_EVENT, error, attempts=0)
        except Exception as error:  # whatever breaks decoding is the message's fault
            return self._dead(message, DeadLetterReason.UNDECODABLE, error, attempts=0)

        attempts = 0
        while True:
            attempts += 1
            try:
                await self.handler(recorded)
            except Exception as error:
                if not is_retriable(error):
                    return self._dead(message, DeadLetterReason.HANDLER_FAILED, error, attempts)
                if self.policy.gives_up_after(attempts):
                    return self._dead(message, DeadLetterReason.RETRIES_EXHAUSTED, error, attempts)
                delay = self.policy.backoff.delay(attempts)
                log.warning(
                    "group %s: handler failed on event %s (%s/%d@%d), attempt %d, retrying in"
                    " %.2fs: %s",
                    self.group,
                    recorded.event_id,
                    message.topic,
                    message.partition,
                    message.offset,
                    attempts,
                    delay,
                    _describe(error),
                )
                if await sleep_unless_stopped(delay, stop):
                    return Delivery(Outcome.ABANDONED, attempts)
            else:
                return Delivery(Outcome.HANDLED, attempts)

    def _dead(
        self, message: BusMessage, reason: DeadLetterReason, error: Exception, attempts: int
    ) -> Delivery:
        letter = DeadLetter(
            message=message,
            group=self.group,
            reason=reason,
            detail=str(error) or type(error).__name__,
            exception_type=f"{type(error).__module__}.{type(error).__qualname__}",
            attempts=attempts,
        )
        log.error(
            "group %s: dead-lettering %s/%d@%d (%s): %s",
            self.group,
            message.topic,
            message.partition,
            message.offset,
            reason.value,
            _describe(error),
        )
        return Delivery(Outcome.DEAD_LETTERED, attempts, letter)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
