"""KafkaSink's flush is bounded: a broker that never confirms cannot hold the daemon (or produce) for good.

The producer here is a stand-in that never confirms: the state kafka-python 3.0.12's idempotent
producer was seen stuck in after a broker outage of about two minutes (waiting for a producer id it
never asked for again) cannot be brought about on demand on the shared test broker.
"""

from __future__ import annotations

import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError

from streamlearn.kafka import sink as sink_module
from streamlearn.kafka.sink import DeliveryError, KafkaSink


class _Pending:
    is_done = False
    exception = None


class _NeverConfirms:
    def __init__(self) -> None:
        self.waited = 0.0

    def flush(self, timeout=None):
        time.sleep(timeout)
        self.waited += timeout
        raise KafkaTimeoutError("Timeout waiting for future")


def _sink(stop=None) -> KafkaSink:
    sink = KafkaSink.__new__(KafkaSink)  # no broker: the producer is the stand-in above
    sink._stop, sink._producer, sink._pending = stop, _NeverConfirms(), [_Pending(), _Pending()]
    sink._flush_started = None
    return sink


def test_a_flush_the_broker_never_confirms_ends_with_a_delivery_error():
    sink = _sink()
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="the broker confirmed 0 of 2 messages within 1s"):
        sink.flush(timeout_s=1.2)
    assert 1.2 <= time.monotonic() - started < 3.0


def test_a_stop_request_cuts_a_stuck_flush_short(monkeypatch):
    monkeypatch.setattr(sink_module, "_STOP_GRACE_S", 1.0)
    asked = time.monotonic() + 0.6
    sink = _sink(stop=lambda: time.monotonic() >= asked)
    with pytest.raises(DeliveryError, match="after the stop request"):
        sink.flush()  # the default bound is over two minutes
    assert time.monotonic() - asked < 3.0


def test_the_wait_of_a_stuck_flush_can_be_read_from_another_thread_and_is_logged(monkeypatch, caplog):
    # The daemon's loop is blocked in the flush: the metrics read the wait from their own thread.
    monkeypatch.setattr(sink_module, "_SLOW_FLUSH_S", 0.5)
    sink = _sink()
    assert sink.unconfirmed_for() == 0.0
    readings = []
    reader = threading.Timer(1.0, lambda: readings.append(sink.unconfirmed_for()))
    reader.start()
    with caplog.at_level("WARNING", logger="streamlearn.kafka.sink"), pytest.raises(DeliveryError):
        sink.flush(timeout_s=4.0)  # room for a late timer on a loaded machine
    reader.join()
    assert 0.9 <= readings[0] < 4.0 and sink.unconfirmed_for() == 0.0
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.getMessage().startswith("Kafka has not confirmed the outputs yet") and warning.messages == 2
