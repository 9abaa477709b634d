"""Connection settings shared by every Kafka client streamlearn builds (consumer, producer, admin).

>>> from streamlearn.config import KafkaSettings
>>> client_options(KafkaSettings(bootstrap_servers="a:1,b:2"))["bootstrap_servers"]
['a:1', 'b:2']
>>> parse_key("samples:3")
('samples', 3)
"""

from __future__ import annotations

import logging
from typing import Any

from streamlearn.config import KafkaSettings

__all__ = ["client_options", "offset_key", "parse_key", "BOOTSTRAP_TIMEOUT_MS"]

logger = logging.getLogger(__name__)

#: How long a client waits for the broker before giving up at start-up.
BOOTSTRAP_TIMEOUT_MS = 15_000


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments (brokers, security, SASL) common to KafkaConsumer, KafkaProducer and KafkaAdminClient."""
    options: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": settings.security_protocol,
        "client_id": "streamlearn",
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
    }
    if settings.sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.sasl_mechanism
    if settings.sasl_username is not None:
        options["sasl_plain_username"] = settings.sasl_username
    if settings.sasl_password is not None:
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options


def offset_key(topic: str, partition: int) -> str:
    """The ``"topic:partition"`` key under which offsets are stored in a checkpoint."""
    return f"{topic}:{partition}"


def parse_key(key: str) -> tuple[str, int]:
    """Split a ``"topic:partition"`` key (topic names may not contain ':', so the last one separates)."""
    topic, _, partition = key.rpartition(":")
    if not topic or not partition.isdigit():
        raise ValueError(f"offset key must look like 'topic:partition', got {key!r}")
    return topic, int(partition)
