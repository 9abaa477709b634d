"""The daemon's run loop: poll a batch, handle it, checkpoint on cadence, then commit (DESIGN.md §1).

:class:`Service` only composes parts that live in their own modules — the
Kafka source and sink, the batch handler, the learner, the checkpointer, the
HTTP API, the metrics and (with ``fusion.every_seconds``) the exchange of models
with the other replicas — and holds them in an ``ExitStack``. Signal
handlers only set a stop flag: the current batch finishes, a final checkpoint
is written, its offsets committed, and ``run`` returns 0. ``count`` (records
consumed) and ``timeout`` (seconds of wall time) bound a run for tests.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from streamlearn import __version__
from streamlearn.config import KafkaSettings, Settings
from streamlearn.control import ControlQueue
from streamlearn.dirlock import DirectoryLock
from streamlearn.kafka import KafkaSink, KafkaSource, Source, prepare_service_topics
from streamlearn.metrics import Metrics
from streamlearn.pipeline import BatchHandler
from streamlearn.snapshot_store import ModelState, SnapshotStore

__all__ = ["Service", "run_daemon"]

logger = logging.getLogger(__name__)

_PUBLISH_EVERY_S = 0.5  # newest snapshot for the API at least this often (and on every version change)
_LAG_EVERY_S = 1.0
_PROGRESS_EVERY_S = 60.0
_ADMIN_TIMEOUT_S = 30.0
_OUTAGE_AFTER_S = 10.0  # the broker unanswered this long: a warning (kafka-python itself only logs retries)


class Service:
    """One daemon instance: ``run()`` consumes, learns, publishes and serves until stopped."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None,
                 stop_event: threading.Event | None = None,
                 source_factory: Callable[..., Any] = KafkaSource,
                 sink_factory: Callable[..., Any] = KafkaSink,
                 prepare_topics: Callable[[KafkaSettings], int | None] = prepare_service_topics) -> None:
        self.settings = settings
        self.source_factory = source_factory  # (kafka settings, start_offsets=...) -> Source with close()
        self.sink_factory = sink_factory  # (kafka settings, stop=callable) -> Sink with close()
        self.prepare_topics = prepare_topics  # (kafka settings) -> the dead-letter topic's message limit, or None
        self.metrics = metrics if metrics is not None else Metrics()
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.store = SnapshotStore()
        self.control = ControlQueue()
        self.learner: Any = None
        self.checkpointer: Any = None
        self.replicas: Any = None  # ReplicaSync while fusion is on
        self.api_port: int | None = None
        self.consumed = 0
        self._published_version: int | None = None
        self._published_at = 0.0
        self._unpublished = False  # learned since the last snapshot handed to the API
        self._gc_frozen = False
        self._outage_since: float | None = None  # when the broker stopped answering, once reported

    def stop(self) -> None:
        """Ask the loop to finish its batch, checkpoint, commit and return (safe from any thread)."""
        self.stop_event.set()

    def run(self, *, count: int | None = None, timeout: float | None = None) -> int:
        """Run until stopped, until ``count`` records were consumed, or ``timeout`` seconds passed; return 0."""
        from streamlearn.checkpointer import Checkpointer, ensure_writable, restore
        from streamlearn.initial_model import start_learner  # heavy (torch): imported when the daemon starts

        s = self.settings
        with ExitStack() as stack:
            stack.callback(self._unfreeze_gc)
            ensure_writable(Path(s.checkpoint.dir))
            stack.enter_context(DirectoryLock(Path(s.checkpoint.dir), "checkpoint.dir"))  # before restore reads it
            # The model before the topics: an unusable learner.initial_model stops the start (exit 2)
            # before anything is created on the broker.
            self.learner, extra, restored = restore(s.checkpoint, lambda: start_learner(s.learner), s.learner)
            offsets = extra.get("offsets") or {}
            if offsets and not any(key.rsplit(":", 1)[0] == s.kafka.samples_topic for key in offsets):
                logger.warning("the checkpoint was written by a daemon of other topics; its offsets are not used "
                               "(is checkpoint.dir shared with another deployment?)",
                               extra={"checkpoint": str(restored), "offsets_of": sorted(offsets),
                                      "samples_topic": s.kafka.samples_topic})
            if restored is not None and s.learner.initial_model is not None:
                logger.info("learner.initial_model not used: the checkpoint continues this deployment's model",
                            extra={"initial_model": str(s.learner.initial_model), "checkpoint": str(restored)})
            dead_letter_limit = self.prepare_topics(s.kafka)
            self.metrics.observe_learner(self.learner, baseline=True)
            self._publish(force=True)
            self.store.set_checkpoint(None if restored is None else str(restored))  # what /v1/model/weights serves
            source = self.source_factory(s.kafka, start_offsets=extra.get("offsets"))
            stack.callback(source.close)
            sink = self.sink_factory(s.kafka, stop=self.stop_event.is_set)
            stack.callback(sink.close)
            self.metrics.watch_kafka(lambda: max(source.unanswered_for(), sink.unconfirmed_for()))
            stack.callback(self.metrics.watch_kafka, lambda: 0.0)
            handler = BatchHandler(s, sink, self.metrics, dead_letter_limit=dead_letter_limit)
            self.checkpointer = Checkpointer(s.checkpoint, source, self.metrics, self.store)
            stack.callback(self.checkpointer.close)
            if s.fusion.every_seconds > 0:
                self._start_fusion(stack)
            if s.api.enabled:
                self._start_api(stack, source)
            self._install_signal_handlers(stack)
            logger.info("daemon started", extra={"topic": s.kafka.samples_topic, "group": s.kafka.group_id,
                                                 "model_version": self.learner.model_version})
            try:
                self._loop(source, handler, count, timeout)
            except Exception as exc:
                # No final checkpoint: the failed batch's outputs may be missing, so its offsets must not be committed.
                # A background checkpoint begun before the failure holds only handled, flushed records: commit it.
                self._settle_checkpoint()
                logger.error("daemon failed; stopping without a final checkpoint",
                             extra={"consumed": self.consumed, "model_version": self.learner.model_version,
                                    "error": f"{exc.__class__.__name__}: {exc}"})
                logger.debug("daemon failure", exc_info=True)  # the traceback, for --log-level DEBUG
                raise
            self._shutdown()
        logger.info("daemon stopped", extra={"consumed": self.consumed, "model_version": self.learner.model_version})
        return 0

    def _unfreeze_gc(self) -> None:
        if self._gc_frozen:
            gc.unfreeze()  # let interpreter teardown free what was frozen (extensions complain otherwise)
            self._gc_frozen = False

    def _loop(self, source: Source, handler: BatchHandler, count: int | None, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        next_lag = next_progress = time.monotonic()
        while not self.stop_event.is_set():
            self.control.run_pending()
            if deadline is not None and time.monotonic() >= deadline:
                break
            records = source.poll(None if count is None else count - self.consumed)
            if records:
                outcome = handler.handle(self.learner, records)
                if not self._gc_frozen:
                    # torch, the model and the clients are loaded now: move them out of the collector's
                    # reach, so full collections stop pausing the loop for 100-200 ms (tail latency).
                    gc.collect()
                    gc.freeze()
                    self._gc_frozen = True
                self.consumed += len(records)
                self.checkpointer.note(len(records))
                self.metrics.observe_learner(self.learner)
                self._unpublished = True
                if logger.isEnabledFor(logging.DEBUG):
                    last = records[-1]
                    logger.debug("batch", extra={
                        "records": outcome.records, "embedded": outcome.embedded, "rejected": outcome.rejected,
                        "where": f"{last.topic}[{last.partition}]@{last.offset}",
                        "model_version": self.learner.model_version})
            if self._unpublished:
                self._publish(idle=not records)
            if self.replicas is not None and self.replicas.due():
                self._fusion_round()
            self.checkpointer.finish()  # commit a background checkpoint that has reached the disk
            if self.checkpointer.due():
                if self.checkpointer.requested:
                    self._checkpoint()  # an admin changed the model: write it before going on
                else:
                    self.checkpointer.start(self.learner)
            now = time.monotonic()
            if now >= next_lag:
                self.metrics.set_consumer_lag(source.lag())
                self.metrics.observe_consumer_restarts(source.restarts)
                self._report_outage(source.unanswered_for())
                next_lag = now + _LAG_EVERY_S
            if now >= next_progress:
                logger.info("progress", extra={"consumed": self.consumed, "model_version": self.learner.model_version,
                                               "samples_seen": self.learner.samples_seen})
                next_progress = now + _PROGRESS_EVERY_S
            if count is not None and self.consumed >= count:
                break

    def _start_fusion(self, stack: ExitStack) -> None:
        from streamlearn.kafka.exchange import ModelExchange
        from streamlearn.replicas import ReplicaSync

        exchange = ModelExchange(self.settings.kafka)
        stack.callback(exchange.close)
        self.replicas = ReplicaSync(exchange, self.settings.fusion, self.metrics)
        logger.info("model fusion on", extra={"replica": self.replicas.replica, "topic": exchange.topic,
                                              "every_s": self.settings.fusion.every_seconds})

    def _fusion_round(self) -> None:
        """Average in the peers' new encoders (if that does not hurt) and publish ours, between batches.

        A failure is logged and the stream goes on: sharing models is never worth stopping the daemon for.
        """
        version = self.learner.model_version
        try:
            self.replicas.run(self.learner)
        except Exception as exc:
            logger.error("fusion round failed; the stream goes on", extra={
                "model_version": self.learner.model_version, "error": f"{exc.__class__.__name__}: {exc}"})
            logger.debug("fusion round failure", exc_info=True)
        if self.learner.model_version != version:
            self.metrics.observe_learner(self.learner)
            self._publish(force=True)

    def _report_outage(self, unanswered_s: float) -> None:
        """One warning when the broker stops answering, one line when it answers again (kafka-python only retries)."""
        if unanswered_s >= _OUTAGE_AFTER_S and self._outage_since is None:
            self._outage_since = time.monotonic() - unanswered_s
            logger.warning("Kafka does not answer; consuming and publishing wait for it (nothing is lost)",
                           extra={"bootstrap_servers": self.settings.kafka.bootstrap_servers,
                                  "seconds": round(unanswered_s)})
        elif unanswered_s == 0.0 and self._outage_since is not None:
            logger.info("Kafka answers again", extra={"after_s": round(time.monotonic() - self._outage_since)})
            self._outage_since = None

    def _shutdown(self) -> None:
        """Final checkpoint and commit, so a restart resumes exactly here."""
        self.control.run_pending()
        self._publish(force=True)
        self.checkpointer.finish(wait=True)
        if self.checkpointer.pending or self.checkpointer.requested or self.checkpointer.failures:
            self.checkpointer.checkpoint(self.learner, final=True)

    def _settle_checkpoint(self) -> None:
        try:
            self.checkpointer.finish(wait=True)
        except Exception as exc:  # the loop's own failure is the one to report
            logger.error("could not complete the background checkpoint",
                         extra={"consumed": self.consumed, "error": f"{exc.__class__.__name__}: {exc}"})
            logger.debug("background checkpoint failure", exc_info=True)

    def _checkpoint(self) -> None:
        self.checkpointer.checkpoint(self.learner)

    def _publish(self, *, force: bool = False, idle: bool = False) -> None:
        """Give the API a fresh snapshot: on a new model version, when the last one is old, or when idle."""
        learner = self.learner
        now = time.monotonic()
        version = learner.model_version
        fresh = version == self._published_version and now - self._published_at < _PUBLISH_EVERY_S
        if fresh and not (force or idle):
            return
        self.store.publish(ModelState.from_learner(learner))
        self._published_version, self._published_at, self._unpublished = version, now, False
        self.metrics.set_model_info({"n_features": learner.n_features, "embedding_dim": learner.embedding_dim,
                                     "hidden_dim": learner.hidden_dim, "version": __version__})

    def _start_api(self, stack: ExitStack, source: Source) -> None:
        from streamlearn.api import create_app
        from streamlearn.api_server import ApiServer

        app = create_app(self.store, self.metrics.registry, self.settings, self._admin_hooks(),
                         ready=source.is_assigned)
        server = ApiServer(app, self.settings.api.host, self.settings.api.port).start()
        stack.callback(server.stop)
        self.api_port = server.port

    def _admin_hooks(self) -> dict:
        """Admin actions, each run on the learner thread between batches (never concurrently with learning)."""

        def after(action: str) -> None:
            self.metrics.observe_learner(self.learner)
            self._publish(force=True)
            self.checkpointer.request()  # a restart must not bring back the model the admin replaced
            logger.warning("model %s by admin request", action, extra={"model_version": self.learner.model_version})

        def rollback() -> dict:
            ok = bool(self.learner.rollback())
            if ok:
                after("rolled back")
            return {"rolled_back": ok, "model_version": int(self.learner.model_version)}

        def reset() -> dict:
            self.learner.reset()
            self.metrics.reset_accuracy()
            after("reset")
            return {"reset": True, "model_version": int(self.learner.model_version)}

        return {
            "rollback": lambda: self.control.call(rollback, timeout=_ADMIN_TIMEOUT_S),
            "reset": lambda: self.control.call(reset, timeout=_ADMIN_TIMEOUT_S),
        }

    def _install_signal_handlers(self, stack: ExitStack) -> None:
        """SIGTERM/SIGINT only set the stop flag (main thread only; tests run the loop in a thread)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: object) -> None:
            logger.info("stop requested", extra={"signal": signal.Signals(signum).name})
            self.stop_event.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.signal(sig, on_signal)
            stack.callback(signal.signal, sig, previous)


def run_daemon(settings: Settings, *, count: int | None = None, timeout: float | None = None,
               stop_event: threading.Event | None = None) -> int:
    """Run the daemon with ``settings`` (``streamlearn run``); return the exit code (0 after a clean stop)."""
    _raise_open_file_limit()
    return Service(settings, stop_event=stop_event).run(count=count, timeout=timeout)


def _raise_open_file_limit() -> None:
    """Lift the soft limit on open files to the hard one: HTTP clients, Kafka sockets and checkpoints share it.

    The soft limit is often 1,024 (systemd's default) while the hard one is far higher; a burst of
    API connections would otherwise take the descriptors a checkpoint write needs.
    """
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            logger.debug("raised the open-file limit", extra={"from": soft, "to": wanted})
    except (OSError, ValueError) as exc:
        logger.info("open-file limit left as it is", extra={"error": str(exc)})
