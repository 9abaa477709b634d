"""Log lines: key=value, one per record; tracebacks only when debugging."""

import io
import logging

import pytest

from streamlearn.logging_setup import configure_logging


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _log_a_library_error() -> None:
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        # What kafka-python does when the broker goes away under the daemon.
        logging.getLogger("kafka.conn").error("error receiving from broker", exc_info=True)


@pytest.mark.parametrize("level, lines, traceback", [("INFO", 1, False), ("DEBUG", 4, True)])
def test_an_exception_is_one_line_unless_debugging(restore_root, level, lines, traceback):
    out = io.StringIO()
    configure_logging(level, out)
    _log_a_library_error()
    text = out.getvalue()
    assert 'msg="error receiving from broker"' in text
    assert ('Traceback (most recent call last)' in text) is traceback
    assert (text.count("\n") == lines) if not traceback else text.count("\n") >= lines
    if not traceback:
        assert 'exc="ConnectionResetError: [Errno 104] Connection reset by peer"' in text


def test_a_library_repeating_itself_is_logged_once_per_kind_unless_debugging(restore_root):
    """kafka-python logs each failed reconnect again (an unreachable broker: ~21 lines); ours are never held."""
    for level, kafka_lines in (("INFO", 2), ("DEBUG", 20)):
        out = io.StringIO()
        configure_logging(level, out)
        for attempt in range(10):
            logging.getLogger("kafka.net.manager").error("Connection failed: %s", f"attempt {attempt}")
            logging.getLogger("kafka.net.manager").warning("Bootstrap not ready; waiting %.2f secs", attempt / 10)
            logging.getLogger("streamlearn.service").warning("still waiting for the broker")
        lines = out.getvalue().splitlines()
        assert sum("logger=kafka" in line for line in lines) == kafka_lines, level
        assert sum("logger=streamlearn.service" in line for line in lines) == 10
