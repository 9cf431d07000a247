"""Exceptions raised by kpush (shared by the asyncio and blocking APIs)."""

from __future__ import annotations

import re
from typing import Optional

__all__ = [
    "CAUSES",
    "ForkedProcessError",
    "InvalidConfigError",
    "KafkaTimeoutError",
    "KafkaError",
    "NotWrittenError",
    "OutcomeUnknownError",
    "WrongLoopError",
    "make_error",
]

#: Cause names, indexed by the engine's cause codes (python/engine/outcome.go).
CAUSES = (
    "none",
    "buffer_full",
    "delivery_timeout",
    "authentication",
    "closed",
    "record_too_large",
    "unknown_topic",
    "invalid_topic",
    "no_topic",
    "invalid_header",
    "invalid_timestamp",
    "invalid_partition",
    "sequence_reset",
    "no_broker",
    "cancelled",
    "deadline_exceeded",
    "broker",
    "other",
    "invalid_config",
)


class KafkaError(Exception):
    """Base class of every error kpush raises for a record or a producer.

    Attributes:
        cause: a short name of what went wrong: ``"buffer_full"``,
            ``"delivery_timeout"``, ``"authentication"``, ``"closed"``,
            ``"record_too_large"``, ``"unknown_topic"``, ``"cancelled"``, a
            Kafka error name such as ``"NOT_ENOUGH_REPLICAS"`` for broker
            errors, ...
        message: the engine's full message.
        topic: the record's topic, if known.
        partition: the record's partition, or -1 if none was chosen.
        code: the Kafka error code for broker errors, else 0.
    """

    #: True when retrying the record cannot create a duplicate.
    retriable_without_duplicates: bool = False

    def __init__(
        self,
        message: str,
        cause: str = "other",
        topic: Optional[str] = None,
        partition: int = -1,
        code: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause
        self.topic = topic
        self.partition = partition
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cause={self.cause!r}, message={self.message!r})"


class NotWrittenError(KafkaError):
    """The record was definitely not written; retrying cannot duplicate it."""

    retriable_without_duplicates = True


class OutcomeUnknownError(KafkaError):
    """The record may have been written (timeout, connection cut, cancelled
    while in flight); retrying may duplicate it."""


class InvalidConfigError(KafkaError, ValueError):
    """A producer setting is invalid (raised by the constructor or start)."""


class ForkedProcessError(KafkaError, RuntimeError):
    """This process was forked from one whose kpush engine had already
    started. The Go runtime does not survive fork(): create producers only
    after forking (in each gunicorn/uvicorn worker, not in the master)."""


class WrongLoopError(KafkaError, RuntimeError):
    """An asyncio producer was used outside the event loop that started it
    (another loop, another thread, or no running loop). A producer belongs to
    one loop: create one per loop (per thread running a loop). Nothing was
    sent."""


_KAFKA_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def _broker_name(message: str) -> str:
    # Broker errors carry franz-go kerr's name, e.g. "NOT_ENOUGH_REPLICAS: ...".
    m = _KAFKA_NAME.search(message)
    return m.group(0) if m else "broker"


def make_error(
    kind_unknown: bool, cause: int, code: int, message: str, topic: Optional[str], partition: int
) -> KafkaError:
    """Build the exception for one failed record from the engine's codes."""
    name = CAUSES[cause] if 0 <= cause < len(CAUSES) else "other"
    if name == "broker":
        name = _broker_name(message)
    cls = OutcomeUnknownError if kind_unknown else NotWrittenError
    return cls(message, name, topic, partition, code)


class KafkaTimeoutError(KafkaError, TimeoutError):
    """flush() did not finish within its timeout (nothing failed because of it)."""
