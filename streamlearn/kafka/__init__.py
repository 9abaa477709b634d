"""Kafka adapters of the daemon: consumer source, producer sink, topic admin."""

from streamlearn.kafka.admin import ensure_topics, prepare_service_topics, service_topic_configs, service_topics
from streamlearn.kafka.connection import client_options, offset_key, parse_key
from streamlearn.kafka.protocols import Record, Sink, Source
from streamlearn.kafka.sink import DeliveryError, KafkaSink
from streamlearn.kafka.source import KafkaSource

__all__ = [
    "DeliveryError",
    "KafkaSink",
    "KafkaSource",
    "Record",
    "Sink",
    "Source",
    "client_options",
    "ensure_topics",
    "offset_key",
    "parse_key",
    "prepare_service_topics",
    "service_topic_configs",
    "service_topics",
]
