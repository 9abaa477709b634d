"""Live summary of a running daemon, one plain line per interval, read from its HTTP API.

``python -m streamlearn.watch [--url URL] [--duration S] [--interval S] [--until-samples N]``
polls ``/v1/model``, ``/v1/drift`` and ``/metrics`` and writes lines such as::

    14.0s  samples 2,800  rate 200/s  accuracy 0.912  drift events 2 (last: hddm, repair)  model v57  lag 0

It always ends by itself: after ``--duration`` seconds, or once the daemon
has consumed ``--until-samples`` records. Plain lines (no cursor control), so
it reads the same in a terminal, a pipe or a CI log. An unreachable daemon is
one line with the reason, never a traceback. Exit status: 0 if the daemon
answered at least once, 1 if it never did, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

from streamlearn.argtypes import int_at_least, positive_float
from streamlearn.errors import StreamlearnError

__all__ = ["DaemonStatus", "WatchError", "fetch_status", "format_line", "main", "watch"]

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"


class WatchError(StreamlearnError):
    """The daemon's API could not be read (not running, wrong URL, or an unexpected answer)."""


@dataclass(frozen=True)
class DaemonStatus:
    """One reading of the daemon: counters from /metrics, model facts from /v1/model and /v1/drift."""

    consumed: int  # records taken from the samples topic (embedded + rejected)
    rejected: int
    accuracy: float | None  # rolling prequential accuracy; None before the first labeled sample
    drift_events: int  # detections since the daemon started
    last_drift: dict | None
    model_version: int
    classes: int
    lag: int | None


def _get(base_url: str, path: str, timeout_s: float) -> bytes:
    url = base_url.rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise WatchError(f"{url} answered {exc.code}: {_detail(exc)}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:  # refused, reset, timed out, cut
        reason = getattr(exc, "reason", None) or f"{exc.__class__.__name__}: {exc}"
        raise WatchError(f"cannot reach {url}: {reason}") from exc


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["detail"])
    except (ValueError, KeyError, TypeError, OSError):
        return exc.reason or "no detail"


def _metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text -> {sample name: [(labels, value), ...]}."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _sum(metrics: dict, name: str, **labels: str) -> float | None:
    rows = [v for lab, v in metrics.get(name, []) if all(lab.get(k) == want for k, want in labels.items())]
    return sum(rows) if rows else None


def fetch_status(base_url: str, timeout_s: float = 2.0) -> DaemonStatus:
    """Read the daemon at ``base_url`` once; raise WatchError when it cannot be read."""
    try:
        model = json.loads(_get(base_url, "/v1/model", timeout_s))
        drift = json.loads(_get(base_url, "/v1/drift", timeout_s))
        metrics = _metrics(_get(base_url, "/metrics", timeout_s).decode("utf-8"))
        embedded = _sum(metrics, "streamlearn_samples_total", outcome="embedded") or 0.0
        rejected = _sum(metrics, "streamlearn_samples_total", outcome="rejected") or 0.0
        labeled = (_sum(metrics, "streamlearn_samples_total", outcome="learned") or 0.0) > 0
        accuracy = _sum(metrics, "streamlearn_prequential_accuracy") if labeled else None
        if accuracy is not None and math.isnan(accuracy):  # no labeled sample since a reset
            accuracy = None
        lag = _sum(metrics, "streamlearn_consumer_lag")
        events = drift.get("events") or []
        return DaemonStatus(
            consumed=int(embedded + rejected),
            rejected=int(rejected),
            accuracy=accuracy,
            drift_events=int(_sum(metrics, "streamlearn_drift_events_total") or 0),
            last_drift=events[-1] if events else model.get("last_drift"),
            model_version=int(model["model_version"]),
            classes=len(model.get("classes") or ()),
            lag=None if lag is None else int(lag),
        )
    except WatchError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not the answers a streamlearn daemon gives
        raise WatchError(f"unexpected answer from {base_url}: {exc.__class__.__name__}: {exc}") from exc


def format_line(elapsed_s: float, status: DaemonStatus, rate: float | None) -> str:
    """One summary line.

    >>> s = DaemonStatus(1234, 0, 0.9123, 2, {"detector": "hddm", "action": "repair"}, 57, 10, 3)
    >>> format_line(14.0, s, 200.4)
    '  14.0s  samples 1,234  rate 200/s  accuracy 0.912  drift events 2 (last: hddm, repair)  model v57  lag 3'
    >>> format_line(0.0, DaemonStatus(0, 0, None, 0, {"detector": "hddm", "action": "restore:0"}, 255, 0, None), None)
    '   0.0s  samples 0  rate -  accuracy -  drift events 0 (last: hddm, restore:0, before this start)  model v255'
    """
    parts = [f"{elapsed_s:6.1f}s", f"samples {status.consumed:,}",
             "rate -" if rate is None else f"rate {rate:,.0f}/s",
             "accuracy -" if status.accuracy is None else f"accuracy {status.accuracy:.3f}"]
    drift = f"drift events {status.drift_events}"
    if status.last_drift:
        # The count is since this daemon started; the last event may come from the checkpoint it resumed.
        before = "" if status.drift_events else ", before this start"
        drift += f" (last: {status.last_drift.get('detector', '?')}, {status.last_drift.get('action', '?')}{before})"
    parts += [drift, f"model v{status.model_version}"]
    if status.rejected:
        parts.append(f"rejected {status.rejected:,}")
    if status.lag is not None:
        parts.append(f"lag {status.lag:,}")
    return "  ".join(parts)


def watch(base_url: str, *, duration_s: float, interval_s: float = 2.0, until_samples: int | None = None,
          out: IO[str] | None = None, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Write a summary line every ``interval_s`` until ``duration_s`` passed or ``until_samples`` were consumed.

    Returns 0 if the daemon answered at least once, else 1. Never raises for an unreachable daemon.
    """
    out = out if out is not None else sys.stdout
    start = clock()
    deadline = start + duration_s
    previous: tuple[float, int] | None = None
    answered, last_error = False, None
    while True:
        now = clock()
        try:
            status = fetch_status(base_url, timeout_s=max(0.5, min(5.0, interval_s)))
        except WatchError as exc:
            if str(exc) != last_error:  # one line per distinct problem, not one per poll
                out.write(f"{now - start:6.1f}s  {exc}\n")
                out.flush()
                last_error = str(exc)
        else:
            last_error = None
            answered = True
            rate = None
            if previous is not None and now > previous[0]:
                rate = max(0.0, (status.consumed - previous[1]) / (now - previous[0]))
            previous = (now, status.consumed)
            out.write(format_line(now - start, status, rate) + "\n")
            out.flush()
            if until_samples is not None and status.consumed >= until_samples:
                break
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(interval_s, remaining))
    return 0 if answered else 1


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """Entry point of ``python -m streamlearn.watch``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m streamlearn.watch", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the daemon's API (default {DEFAULT_URL})")
    parser.add_argument("--duration", type=positive_float, default=60.0, metavar="S", help="stop after S seconds")
    parser.add_argument("--interval", type=positive_float, default=2.0, metavar="S", help="seconds between lines")
    parser.add_argument("--until-samples", type=int_at_least(0), metavar="N",
                        help="stop early once the daemon has consumed N records in total")
    args = parser.parse_args(argv)  # bad arguments: argparse's one-line message and exit status 2
    try:
        return watch(args.url, duration_s=args.duration, interval_s=args.interval,
                     until_samples=args.until_samples, out=out)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
