"""Histograms of durations, fixed bins shared by every day of the rollup, so that the
histograms of any days, townships or radiologists add up bin by bin and quartiles come
from the sum.

Bins are log-spaced, 64 to each doubling of the duration, from one second to 2**22 seconds
(48.5 days): bin 0 holds [0, 1 s), bin k >= 1 holds [2**((k-1)/64), 2**(k/64)) seconds,
and the last bin also everything longer. A bin is 1.09 % wider than its lower edge, so a
quartile read from a histogram is within 1.09 % of the exact one (within 1 s below one
second), however many exams are merged: 0.4 minutes at a 40-minute median.

A row's histograms are stored as one `bytes`: little-endian records of (uint16 key, uint32
count), key = measure * 2048 + bin, only for bins that hold something. Measure 5 is not a
duration's log bins but the page's distribution plot (10-minute bins, the last open)."""

from __future__ import annotations

import numpy as np

BINS_PER_OCTAVE = 64
OCTAVES = 22
SIZE = BINS_PER_OCTAVE * OCTAVES + 1  # bin 0, then the log bins
KEY_STRIDE = 2048  # keys of measure m are m * KEY_STRIDE + bin
RELATIVE_ERROR = 2 ** (1 / BINS_PER_OCTAVE) - 1  # 1.09 %

# The distribution plot of the consult time: 10-minute bins, the last one open-ended.
PLOT_MEASURE = 5
PLOT_BIN_MINUTES = 10
PLOT_BINS = 18  # the last bin, "180 minutes and more"

RECORD = np.dtype([("key", "<u2"), ("count", "<u4")])

_k = np.arange(SIZE, dtype=float)
LOWER_SECONDS = np.where(_k == 0, 0.0, 2 ** ((_k - 1) / BINS_PER_OCTAVE))
UPPER_SECONDS = 2 ** (_k / BINS_PER_OCTAVE)


def bins_of(seconds: np.ndarray) -> np.ndarray:
    """The bin of each duration (seconds, no NaN). A negative duration (a clock set back)
    counts as zero; one beyond the last bin, in the last bin."""
    s = np.maximum(seconds, 0.0)
    k = np.floor(np.log2(np.maximum(s, 1.0)) * BINS_PER_OCTAVE).astype(np.int64) + 1
    k[s < 1.0] = 0
    return np.minimum(k, SIZE - 1)


def plot_bins_of(minutes: np.ndarray) -> np.ndarray:
    return np.minimum(np.floor(np.maximum(minutes, 0.0) / PLOT_BIN_MINUTES), PLOT_BINS).astype(np.int64)


def encode(keys: np.ndarray, counts: np.ndarray) -> bytes:
    records = np.empty(keys.size, dtype=RECORD)
    records["key"] = keys
    records["count"] = counts
    return records.tobytes()


def decode(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=RECORD)


def keys_and_counts(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The keys (uint16) and counts (float) of many records at once. Read as aligned
    16-bit words: a 6-byte record's fields are unaligned, and numpy copies them slowly."""
    words = np.frombuffer(blob, dtype="<u2")
    keys = words[0::3]
    counts = words[1::3].astype(np.float64) + words[2::3].astype(np.float64) * 65536.0
    return keys, counts


def _value_at_rank(counts: np.ndarray, cumulative: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """The estimated value (seconds) of the rank-th smallest duration (0-based) of each
    histogram: the ranks in a bin are spread evenly across it, each at the middle of its
    share of the bin. `cumulative` is the running total of all the histograms' counts, row
    after row (flattened), so that one binary search finds every row's bin."""
    rows = counts.shape[0]
    flat = cumulative.reshape(-1)
    before_row = np.concatenate([[0], flat[SIZE - 1 :: SIZE][:-1]]) if rows else np.zeros(0, dtype=np.int64)
    target = before_row + rank.astype(np.int64)
    position = np.searchsorted(flat, target, side="right")
    row_start = np.arange(rows, dtype=np.int64) * SIZE
    k = np.clip(position - row_start, 0, SIZE - 1)
    cell = row_start + k
    inside = counts.reshape(-1)[cell]
    before = flat[cell] - inside - before_row
    t = (rank - before + 0.5) / np.maximum(inside, 1)
    return LOWER_SECONDS[k] + (UPPER_SECONDS[k] - LOWER_SECONDS[k]) * t


def quartiles_minutes(counts: np.ndarray) -> np.ndarray:
    """Q1, median and Q3 in minutes of each histogram (rows of `counts`, SIZE bins), NaN
    for an empty one. As percentile_cont: the quartile at rank (n - 1) * p, interpolated
    linearly between the two ranks around it."""
    counts = counts.astype(np.int64)
    cumulative = np.cumsum(counts.reshape(-1)).reshape(counts.shape)
    ends = cumulative[:, -1] if counts.shape[0] else np.zeros(0, dtype=np.int64)
    n = np.diff(np.concatenate([[0], ends]))
    last = np.maximum(n - 1, 0)
    result = np.full((counts.shape[0], 3), np.nan)
    for i, p in enumerate((0.25, 0.5, 0.75)):
        h = last * p
        lo = np.floor(h)
        hi = np.minimum(lo + 1, last)
        a = _value_at_rank(counts, cumulative, lo)
        b = _value_at_rank(counts, cumulative, hi)
        result[:, i] = np.where(n > 0, (a + (b - a) * (h - lo)) / 60, np.nan)
    return result
