"""Runs commands from other threads (admin API calls) on the learner thread, between batches.

The learner is not thread-safe, so an admin request never touches it
directly: it submits a function and waits for the run loop to execute it.

>>> import threading, time
>>> q = ControlQueue()
>>> answers = []
>>> caller = threading.Thread(target=lambda: answers.append(q.call(lambda: 41 + 1, timeout=5)))
>>> caller.start()
>>> deadline = time.monotonic() + 5
>>> while not answers and time.monotonic() < deadline:  # the run loop, between batches
...     _ = q.run_pending(); time.sleep(0.01)
>>> caller.join(5); answers
[42]
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["ControlQueue"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ControlQueue:
    """A queue of functions that the learner thread runs with ``run_pending()``; callers block in ``call()``."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()

    def call(self, fn: Callable[[], T], *, timeout: float) -> T:
        """Run ``fn`` on the learner thread and return its result; TimeoutError if not run within ``timeout``."""
        future: Future = Future()
        self._queue.put((fn, future))
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()  # if the loop picks it up later it is skipped, not run behind the caller's back
            raise

    def run_pending(self) -> int:
        """Run every queued function now (on the calling thread); return how many ran."""
        ran = 0
        while True:
            try:
                fn, future = self._queue.get_nowait()
            except queue.Empty:
                return ran
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Exception as exc:  # handed to the caller, who reports it
                logger.error("control command failed", extra={"error": f"{exc.__class__.__name__}: {exc}"})
                logger.debug("control command failure", exc_info=True)
                future.set_exception(exc)
            ran += 1
