"""``streamlearn produce`` stopped by Ctrl-C or SIGTERM on a real broker: it flushes, says so, and exits.

The command runs in its own process, as a user runs it, and the signal comes while it paces the demo
stream. Everything the summary line counts as sent must be in the topic, and nothing more.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from tests.integration.support import wait_for

pytestmark = pytest.mark.integration

SUMMARY = re.compile(r"sent (\d+) demo samples to (\S+) in [\d.]+s \(\d+/s\) \(interrupted\)\n")


def end_offset(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return consumer.end_offsets([TopicPartition(topic, 0)]).get(TopicPartition(topic, 0)) or 0
    except KafkaError:  # not created yet
        return 0
    finally:
        consumer.close()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_producer_delivers_what_it_counted_as_sent_and_exits_with_the_signal_code(
        kafka_bootstrap: str, sig: signal.Signals, code: int) -> None:
    topic = f"stop-{uuid.uuid4().hex[:10]}.samples"
    env = dict(os.environ, STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
               STREAMLEARN_KAFKA__SAMPLES_TOPIC=topic)
    # SIGINT as a terminal's Ctrl-C delivers it to a foreground command (a test run in the background
    # would pass its own SIGINT on ignored, and an ignored SIGINT stays ignored).
    process = subprocess.Popen([sys.executable, "-m", "streamlearn", "produce", "--demo", "--rate", "200", "--count",
                                "100000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: process.poll() is not None or end_offset(kafka_bootstrap, topic) >= 50,
                 "the producer to deliver its first samples", timeout_s=120, every_s=0.5)
        assert process.poll() is None, process.communicate()
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, err
    summary = SUMMARY.fullmatch(out)
    assert summary, out
    assert summary[2] == topic
    assert end_offset(kafka_bootstrap, topic) == int(summary[1])  # all it counted reached the broker, nothing more
    assert "Traceback" not in err
