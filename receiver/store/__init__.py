"""Shared state: dedup, the work queue, leases, incidents, message refs; Redis or embedded.

``base`` holds one protocol per consumer and the value types; ``RedisStore`` (any number
of replicas) and ``MemoryStore`` (one replica, no Redis) implement them all.
"""

from receiver.store.base import (
    Claims,
    Confirmations,
    Epoch,
    History,
    IncidentPage,
    Incidents,
    Intake,
    JobQueue,
    Leases,
    Messages,
    QueuedJob,
    QueueStats,
    Stats,
    Store,
    Values,
    decode_cursor,
    encode_cursor,
    index_member,
    model_key,
    model_names,
)
from receiver.store.memory import MemoryStore
from receiver.store.redis import RedisStore
from receiver.store.redis_queue import CONSUMER_GROUP

__all__ = [
    "CONSUMER_GROUP",
    "Claims",
    "Confirmations",
    "Epoch",
    "History",
    "IncidentPage",
    "Incidents",
    "Intake",
    "JobQueue",
    "Leases",
    "MemoryStore",
    "Messages",
    "QueueStats",
    "QueuedJob",
    "RedisStore",
    "Stats",
    "Store",
    "Values",
    "decode_cursor",
    "encode_cursor",
    "index_member",
    "model_key",
    "model_names",
]
