"""Topic administration: create the service's topics when they do not exist yet."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streamlearn.config import KafkaSettings
from streamlearn.errors import KafkaSetupError
from streamlearn.kafka.connection import client_options
from streamlearn.kafka.limits import HEADROOM, TOPIC_DEFAULT_BYTES, dead_letter_bytes, raw_bytes_within

__all__ = ["ensure_topics", "prepare_service_topics", "service_topic_configs", "service_topics"]

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


def service_topic_configs(settings: KafkaSettings) -> dict[str, dict[str, str]]:
    """Configs of the service's topics where the broker's defaults are too small for ``max_message_bytes``.

    The dead-letter topic holds a rejected record whole (base64: 4/3 of its size), so with the
    default ``max_message_bytes`` (1,000,000) it needs more than the broker's 1 MiB:

    >>> from streamlearn.config import KafkaSettings
    >>> service_topic_configs(KafkaSettings())
    {'streamlearn.dead-letter': {'max.message.bytes': '1349720'}}
    >>> service_topic_configs(KafkaSettings(max_message_bytes=5_000_000))["streamlearn.samples"]
    {'max.message.bytes': '5016384'}
    """
    wanted = {settings.samples_topic: settings.max_message_bytes + HEADROOM,
              settings.dead_letter_topic: dead_letter_bytes(settings.max_message_bytes)}
    return {topic: {"max.message.bytes": str(size)} for topic, size in wanted.items() if size > TOPIC_DEFAULT_BYTES}


def prepare_service_topics(settings: KafkaSettings) -> int | None:
    """Create the service's absent topics (see service_topic_configs); return the dead-letter topic's message limit.

    The limit is read from the broker, since the topic may have existed with a smaller one: then a
    warning says which records will be dead-lettered cut short, and how to keep them whole. None
    when the broker does not say (e.g. no DescribeConfigs permission).
    """
    ensure_topics(settings, configs=service_topic_configs(settings))
    topic = settings.dead_letter_topic
    limit = _message_limit(settings, topic)
    needed = dead_letter_bytes(settings.max_message_bytes)
    if limit is not None and limit < needed:
        logger.warning("the dead-letter topic cannot hold every rejected record whole", extra={
            "topic": topic, "max_message_bytes": limit,
            "detail": f"records over {raw_bytes_within(limit)} bytes are dead-lettered with only their first bytes "
                      f"(their topic, partition and offset name the original); set the topic's max.message.bytes "
                      f"to {needed} to keep records of up to kafka.max_message_bytes whole"})
    return limit


def _admin_client(settings: KafkaSettings) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**client_options(settings))
    except (KafkaError, OSError) as exc:
        raise KafkaSetupError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc


def _message_limit(settings: KafkaSettings, topic: str) -> int | None:
    """The topic's ``max.message.bytes`` as the broker reports it, or None (logged) when it does not."""
    admin = _admin_client(settings)
    try:
        reply = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})],
                                       config_filter="all")
        return int(reply["topic"][topic]["max.message.bytes"]["value"])
    except (KafkaError, KeyError, TypeError, ValueError) as exc:
        logger.warning("cannot read the topic's max.message.bytes; dead letters are sized for the broker default",
                       extra={"topic": topic, "error": f"{exc.__class__.__name__}: {exc}"})
        return None
    finally:
        admin.close()


def ensure_topics(settings: KafkaSettings, topics: Mapping[str, int] | None = None,
                  configs: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Create each topic in ``topics`` (name -> partitions; default: the service's) that is absent.

    ``configs`` gives topic configs (name -> {key: value}) for the topics it creates.
    Returns the names that were created. Existing topics are left as they are
    (their partition count is not changed). Raises KafkaSetupError when the
    broker cannot be reached or refuses.
    """
    wanted = dict(service_topics(settings) if topics is None else topics)
    admin = _admin_client(settings)
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
