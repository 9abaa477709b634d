"""Topic administration: create the service's topics when they do not exist yet."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streamlearn.config import KafkaSettings
from streamlearn.errors import KafkaSetupError
from streamlearn.kafka.connection import client_options

__all__ = ["ensure_topics", "service_topics"]

logger = logging.getLogger(__name__)

_TOPIC_READY_TIMEOUT_MS = 15_000


def service_topics(settings: KafkaSettings) -> dict[str, int]:
    """The daemon's topics and their partition counts: samples as configured; outputs follow it.

    >>> from streamlearn.config import KafkaSettings
    >>> service_topics(KafkaSettings(partitions=3))
    {'streamlearn.samples': 3, 'streamlearn.embeddings': 3, 'streamlearn.dead-letter': 3}
    """
    n = settings.partitions
    return {settings.samples_topic: n, settings.embeddings_topic: n, settings.dead_letter_topic: n}


def ensure_topics(settings: KafkaSettings, topics: Mapping[str, int] | None = None,
                  configs: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Create each topic in ``topics`` (name -> partitions; default: the service's) that is absent.

    ``configs`` gives topic configs (name -> {key: value}) for the topics it creates.
    Returns the names that were created. Existing topics are left as they are
    (their partition count is not changed). Raises KafkaSetupError when the
    broker cannot be reached or refuses.
    """
    wanted = dict(service_topics(settings) if topics is None else topics)
    try:
        admin = KafkaAdminClient(**client_options(settings))
    except (KafkaError, OSError) as exc:
        raise KafkaSetupError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = {name: n for name, n in wanted.items() if name not in existing}
        if not missing:
            return []
        request = {
            name: {"num_partitions": n, "replication_factor": settings.replication_factor,
                   **({"configs": dict(configs[name])} if configs and name in configs else {})}
            for name, n in missing.items()
        }
        try:
            admin.create_topics(request, raise_errors=True)
        except TopicAlreadyExistsError:
            # Another process created them between our list and create; that is what we wanted.
            logger.info("topics already created concurrently topics=%s", sorted(missing))
        admin.wait_for_topics(list(missing), timeout_ms=_TOPIC_READY_TIMEOUT_MS)
        for name, n in missing.items():
            logger.info("created topic=%s partitions=%d replication_factor=%d", name, n, settings.replication_factor)
        return sorted(missing)
    except KafkaError as exc:
        raise KafkaSetupError(f"cannot create topics {sorted(wanted)} on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        admin.close()
