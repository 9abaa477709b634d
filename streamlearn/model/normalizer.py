"""Online per-feature standardisation, so unscaled features reach the encoder on a common scale."""

from __future__ import annotations

import numpy as np

__all__ = ["OnlineStandardizer"]

# A feature's first _WARM_UP samples (from the stream's start, or from when a constant feature
# starts to vary) are summarised afresh at every batch, robustly: values beyond _ROBUST_REACH robust
# scales (1.4826 x the median absolute deviation) of the median are clipped, once at least
# _MIN_ROBUST_ROWS rows are there. After that, values beyond ``reach`` standard deviations of the
# running statistics are clipped (see update).
_WARM_UP = 32
_ROBUST_REACH = 10.0
_MIN_ROBUST_ROWS = 16
# A spread below this fraction of a feature's magnitude is rounding noise in float32 (the
# features' type): such a feature has been constant so far and has no scale yet.
_NO_SPREAD = 1e-6
# The z-score bound of statistics saved before the bound was part of the state.
_LEGACY_CLIP = 6.0
# A unit or offset that changes for good (grams to kilograms, Celsius to Kelvin, a re-configured
# sensor) is told from glitches and slow trends on windows of _WARM_UP rows, checked as they fill:
# - moved: at least _MOVED of a window lies beyond ``reach`` standard deviations (a glitch is a few
#   rows). The window's values then get half the weight of the statistics at once, so the scale
#   spans both the old and the new range (a feature that moves between operating levels keeps the
#   spread across its levels; a restart would shrink it to the noise within one level);
# - rescaled: the window's spread is _RESCALED times above or below the usual spread of a window of
#   this feature, in _PERSIST windows in a row (a slow trend has always had a small window spread, so
#   its own usual spread is small too). The spread is robust (median absolute deviation), so
#   glitches do not move it; a window with none (mostly one value, e.g. a sparse feature) is skipped.
#   Such a feature's statistics start again from the last window.
_MOVED = 0.75
_RESCALED = float(np.log(30.0))
_PERSIST = 2
_USUAL_WINDOWS = 4  # windows before a feature's usual spread is trusted
_USUAL_RATE = 0.05  # then its usual (log) spread follows the windows at this rate


class OnlineStandardizer:
    """Running mean/variance per feature; ``transform`` maps features to clipped z-scores.

    The statistics are exact (Welford) for the first ``1 / min_rate`` samples and then follow
    an exponential moving average with rate ``min_rate``, so they keep tracking a stream whose
    scale drifts without letting one batch move them much.

    Every feature gets its own scale, whatever its units: one measured in millionths counts
    as much as one measured in millions. A feature that has been constant so far has no
    scale yet; its statistics start over with the first batch in which it varies, so a
    feature that comes alive late is on the common scale at once.

    One absurd (but finite) value must not become a feature's scale for millions of
    samples. Over a feature's first 32 samples (from the stream's start, or from when it
    starts to vary) its statistics are rebuilt from all of them at every batch, with values
    beyond 10 robust scales (median absolute deviation) of the median clipped; after that,
    values beyond 6 standard deviations of the running statistics count as if at that edge.

    A change of unit or offset that lasts is a new scale, not a run of outliers. When three
    quarters of a feature's latest 32 values lie beyond ``reach`` standard deviations, those
    values get half the weight of its statistics at once; when two windows of 32 in a row
    spread (median absolute deviation) 30 times more or less than the feature's windows
    usually do, its statistics start again from the last window. ``moved`` and ``restarted``
    list the features of the last update. Without this, the values after a change of unit
    would all read as +-``clip`` (or as one constant) for thousands of samples.

    Parameters
    ----------
    n_features
        Input dimension.
    min_rate
        Smallest update rate of the moving statistics.
    clip
        z-scores are clipped to ``[-clip, clip]``. Three standard deviations leave a
        normal feature as it is but bound the rare large values of a skewed or sparse one
        (a border pixel, a count that is mostly 0), which would otherwise swamp the distances
        the prototype head and the neighbour vote compare; a feature that was constant so
        far would otherwise explode on its first change.
    reach
        When the statistics learn a batch, values beyond ``reach`` standard deviations of the
        current ones count as if at that edge, so a run of glitches cannot inflate the scale
        batch after batch. (A sparse feature, non-zero in fewer than one sample in 36, sees
        its spread shrink under this rule; with ``clip`` its rare values then read as +-3.)
    eps
        Smallest standard deviation used for scaling (absolute).

    >>> s = OnlineStandardizer(2)
    >>> s.update(np.array([[0.0, 100.0], [2.0, 300.0]]))
    >>> s.transform(np.array([[1.0, 200.0], [2.0, 300.0]])).round(3).tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    >>> tiny = OnlineStandardizer(1)
    >>> tiny.update(np.array([[0.0], [2e-9]]))
    >>> tiny.transform(np.array([[2e-9]])).round(3).tolist()
    [[1.0]]
    """

    def __init__(self, n_features: int, min_rate: float = 1e-4, clip: float = 3.0, reach: float = 6.0,
                 eps: float = 1e-30):
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if not 0.0 < min_rate <= 1.0:
            raise ValueError(f"min_rate must be in (0, 1], got {min_rate}")
        if not 0.0 < clip <= reach:
            raise ValueError(f"need 0 < clip <= reach, got clip={clip}, reach={reach}")
        self.n_features = n_features
        self.min_rate = min_rate
        self.clip = clip
        self.reach = reach
        self.eps = eps
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.mean = np.zeros(self.n_features, dtype=np.float64)
        self.var = np.zeros(self.n_features, dtype=np.float64)
        self.seen = np.zeros(self.n_features, dtype=np.int64)  # samples in each feature's statistics
        self._rows = np.zeros((0, self.n_features))  # the latest _WARM_UP rows: young statistics are rebuilt from them
        self.legacy_floor = False  # statistics from a checkpoint written before per-feature scales (see load_state)
        self._reset_regime()
        self._refresh_scale()

    def _reset_regime(self) -> None:
        self.usual_spread = np.zeros(self.n_features)  # log of the usual robust spread of a window of 32
        self.windows = np.zeros(self.n_features, dtype=np.int64)  # windows in usual_spread
        self.alarms = np.zeros(self.n_features, dtype=np.int64)  # rescaled windows in a row (sign: larger/smaller)
        self.since_window = 0  # rows since the last window was checked
        self.moved = np.zeros(0, dtype=np.int64)  # features whose values moved beyond reach in the last update
        self.restarted = np.zeros(0, dtype=np.int64)  # features whose statistics started again in the last update

    def _floor(self, mean: np.ndarray) -> np.ndarray:
        """Per-feature spread below which a feature counts as constant."""
        floor = np.maximum(self.eps, _NO_SPREAD * np.abs(mean))
        if self.legacy_floor:  # the rule those statistics were made with: 0.001, or 1% of the median spread
            typical = float(np.median(np.sqrt(self.var))) if self.count > 1 else 1.0
            floor = np.maximum(floor, max(1e-3, 0.01 * typical))
        return floor

    def _refresh_scale(self) -> None:
        std = np.sqrt(self.var)
        floor = self._constant_below = self._floor(self.mean)
        self._scaled = std > floor
        self._mean32 = self.mean.astype(np.float32)
        self._inv_std32 = (1.0 / np.maximum(std, floor)).astype(np.float32)

    def update(self, x: np.ndarray) -> None:
        """Fold a batch ``x`` of shape ``(n, n_features)`` into the statistics."""
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        if n == 0:
            return
        rows = np.concatenate([self._rows, x])
        # A feature constant for a while (past its warm-up, no scale) starts its statistics again
        # with the first batch in which a value leaves that constant.
        starting = (self.seen >= _WARM_UP) & ~self._scaled
        if starting.any():
            starting &= (np.abs(x - self.mean) > self._constant_below).any(axis=0)
        young = starting | (self.seen < _WARM_UP)
        seen = np.where(starting, n, self.seen + n)
        moved_rows, restart = self._changed_for_good(rows, n, young)
        self.moved, self.restarted = np.flatnonzero(moved_rows), np.flatnonzero(restart)
        if self.restarted.size:
            young = young | restart
            seen = np.where(restart, _WARM_UP, seen)
        mean, var = self.mean.copy(), self.var.copy()
        settled = ~young
        if settled.any():
            xs, m0, v0 = x[:, settled], self.mean[settled], self.var[settled]
            robust = self._scaled[settled]
            if robust.any():
                # One absurd (but finite) value must not wreck the scale for millions of samples:
                # values beyond `reach` standard deviations of the current statistics count as if at that edge.
                reach = self.reach * np.sqrt(v0)
                xs = np.where(robust, np.clip(xs, m0 - reach, m0 + reach), xs)
            weight = np.maximum(n / seen[settled], min(1.0, n * self.min_rate))
            delta = xs.mean(axis=0) - m0
            mean[settled] = m0 + weight * delta
            var[settled] = (1.0 - weight) * (v0 + weight * delta**2) + weight * xs.var(axis=0)
        if young.any():
            # Young statistics (fewer than _WARM_UP samples before this batch) are rebuilt from every
            # row since the feature's start, robustly, so that an early absurd value is clipped as
            # soon as there are enough rows to tell, whatever the batch sizes.
            cols = np.flatnonzero(young)
            for length in np.unique(seen[cols]):
                group = cols[seen[cols] == length]
                mean[group], var[group] = _robust_moments(rows[-int(length):, group])
        for length in np.unique(moved_rows[self.moved]):
            # Half the weight to the values since the move, at once (their mean and spread, and the jump).
            group = self.moved[moved_rows[self.moved] == length]
            m1, v1 = _robust_moments(rows[-int(length):, group])
            m0, v0 = mean[group], var[group]
            mean[group] = 0.5 * (m0 + m1)
            var[group] = 0.5 * (v0 + v1) + 0.25 * (m1 - m0) ** 2
        self.mean, self.var, self.seen = mean, var, seen
        self.count += n
        self._rows = rows[-_WARM_UP:]
        self._refresh_scale()

    def _changed_for_good(self, rows: np.ndarray, n: int, young: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per feature: how many of the latest rows have moved (0: none), and whether its scale changed.

        Checked once a window of _WARM_UP new rows has come in, on settled features with a scale.
        """
        moved_rows = np.zeros(self.n_features, dtype=np.int64)
        restart = np.zeros(self.n_features, dtype=bool)
        self.since_window += n
        if self.since_window < _WARM_UP or len(rows) < _WARM_UP:
            return moved_rows, restart
        self.since_window = 0
        window = rows[-_WARM_UP:]
        cols = np.flatnonzero(~young & self._scaled)
        if cols.size == 0:
            return moved_rows, restart
        w = window[:, cols]
        std = np.sqrt(self.var[cols])
        beyond = np.abs(w - self.mean[cols]) > self.reach * std
        moved = beyond.mean(axis=0) >= _MOVED
        # Rows from the first one beyond reach: the window may start before the change.
        moved_rows[cols[moved]] = _WARM_UP - beyond[:, moved].argmax(axis=0)
        # Robust spread (median absolute deviation): one glitch in a window does not move it.
        spread = 1.4826 * _column_medians(np.abs(w - _column_medians(w)))
        varies = spread > self._constant_below[cols]
        log_spread = np.log(np.where(varies, spread, 1.0))
        usual = self.windows[cols] >= _USUAL_WINDOWS
        ratio = log_spread - self.usual_spread[cols]
        direction = np.where(varies & usual & ~moved, np.sign(ratio) * (np.abs(ratio) > _RESCALED), 0).astype(np.int64)
        alarms = self.alarms[cols]
        alarms = np.where((direction != 0) & (np.sign(alarms) == direction), alarms + direction, direction)
        rescaled = np.abs(alarms) >= _PERSIST
        restart[cols[rescaled]] = True
        self.alarms[cols] = np.where(rescaled, 0, alarms)
        # The usual spread learns from windows that look usual; a restarted feature learns it again.
        learn = varies & ~rescaled & ~moved & (alarms == 0)
        k = self.windows[cols]
        rate = np.maximum(1.0 / (k + 1), _USUAL_RATE)
        usual_spread = self.usual_spread[cols]
        usual_spread = np.where(learn, usual_spread + rate * (log_spread - usual_spread), usual_spread)
        usual_spread[rescaled] = 0.0
        self.usual_spread[cols] = usual_spread
        self.windows[cols] = np.where(rescaled, 0, k + learn)
        return moved_rows, restart

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Clipped z-scores of ``x`` as float32 (a feature without a scale: 0 at its value, else +-clip)."""
        with np.errstate(over="ignore", invalid="ignore"):
            z = (np.asarray(x, dtype=np.float32) - self._mean32) * self._inv_std32
        np.clip(z, -self.clip, self.clip, out=z)
        return z

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that fully describe the statistics (for checkpoints); ``recent_rows`` are raw inputs."""
        state = {"mean": self.mean.copy(), "var": self.var.copy(), "count": np.array([self.count], dtype=np.int64),
                 "seen": self.seen.copy(), "recent_rows": self._rows.copy(), "clip": np.array([self.clip]),
                 "usual_spread": self.usual_spread.copy(), "windows": self.windows.copy(), "alarms": self.alarms.copy(),
                 "since_window": np.array([self.since_window], dtype=np.int64)}
        if self.legacy_floor:
            state["legacy_floor"] = np.ones(1, dtype=np.int64)
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore statistics written by :meth:`state`.

        Statistics saved before per-feature scales (no ``seen``) keep the floor they were made
        with, and statistics saved before the clip was part of the state keep the clip of that
        time (6), so that the model they belong to predicts as it did.
        """
        self.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self.var = np.asarray(state["var"], dtype=np.float64).copy()
        self.count = int(np.asarray(state["count"]).reshape(-1)[0])
        seen = state.get("seen")
        self.seen = (np.full(self.n_features, self.count, np.int64) if seen is None
                     else np.asarray(seen, np.int64).copy())
        rows = state.get("recent_rows")
        self._rows = np.zeros((0, self.n_features)) if rows is None else np.asarray(rows, dtype=np.float64).copy()
        self.legacy_floor = seen is None or "legacy_floor" in state
        clip = state.get("clip")
        self.clip = _LEGACY_CLIP if clip is None else float(np.asarray(clip).reshape(-1)[0])
        self._reset_regime()  # statistics saved before the change watch start watching afresh
        if "usual_spread" in state:
            self.usual_spread = np.asarray(state["usual_spread"], dtype=np.float64).copy()
            self.windows = np.asarray(state["windows"], dtype=np.int64).copy()
            self.alarms = np.asarray(state["alarms"], dtype=np.int64).copy()
            self.since_window = int(np.asarray(state["since_window"]).reshape(-1)[0])
        self._refresh_scale()


def _robust_moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of every column of ``rows``, values beyond ``_ROBUST_REACH`` robust scales of the median clipped.

    >>> mean, var = _robust_moments(np.array([[v] for v in [0.0, 1.0] * 50 + [1e30]]))
    >>> float(mean[0]) < 2.0, float(var[0]) < 10.0
    (True, True)
    """
    if len(rows) >= _MIN_ROBUST_ROWS:
        median = _column_medians(rows)
        scale = 1.4826 * _column_medians(np.abs(rows - median))
        reach = np.where(scale > 0, _ROBUST_REACH * scale, np.inf)
        rows = np.clip(rows, median - reach, median + reach)
    return rows.mean(axis=0), rows.var(axis=0)


def _column_medians(rows: np.ndarray) -> np.ndarray:
    """``np.median(rows, axis=0)``, the same values, from one sort of the columns.

    numpy's median partitions column by column: on a window of 32 rows of 784 features that
    is five times slower than sorting them all at once, and it runs for every window of 32
    samples. Rows holding NaN are left to numpy (it makes such a column's median NaN).

    >>> rows = np.array([[1.0, 5.0], [3.0, -1.0], [2.0, 0.5], [9.0, 0.5]])
    >>> _column_medians(rows).tolist(), np.median(rows, axis=0).tolist()
    ([2.5, 0.5], [2.5, 0.5])
    """
    ordered = np.sort(rows, axis=0)
    if len(ordered) == 0 or np.isnan(ordered[-1]).any():
        return np.median(rows, axis=0)
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2
