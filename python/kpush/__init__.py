"""kpush: a Kafka producer for Python, backed by kpush's Go engine.

- ``kpush.aio.Producer`` / ``kpush.aio.AIOKafkaProducer``: asyncio.
- ``kpush.Producer``: blocking, for threaded apps.

The engine (a Go shared library) is loaded at the first producer and never
unloaded; there is one Go runtime per process. Create producers after
forking (gunicorn/uvicorn workers): a forked child of a process whose engine
had started gets ForkedProcessError.
"""

from ._blocking import Producer
from ._errors import (
    ForkedProcessError,
    InvalidConfigError,
    KafkaError,
    KafkaTimeoutError,
    NotWrittenError,
    OutcomeUnknownError,
    WrongLoopError,
)
from ._records import RecordMetadata

__all__ = [
    "ForkedProcessError",
    "InvalidConfigError",
    "KafkaError",
    "KafkaTimeoutError",
    "NotWrittenError",
    "OutcomeUnknownError",
    "Producer",
    "RecordMetadata",
    "WrongLoopError",
]

__version__ = "0.1.0"
