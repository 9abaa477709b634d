"""Helpers shared by the integration tests: free ports, bounded waits and fresh topics."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaAdminClient
from kafka.admin import NewTopic


@contextmanager
def fresh_topic(bootstrap: str, prefix: str, partitions: int = 1) -> Iterator[str]:
    """A new topic named ``prefix.<random>`` with ``partitions``, deleted afterwards."""
    name = f"{prefix}.{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)], timeout_ms=10_000)
        yield name
        admin.delete_topics([name], timeout_ms=10_000)
    finally:
        admin.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, what: str, timeout_s: float = 120.0, every_s: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(every_s)
