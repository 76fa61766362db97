"""Shared measurement helpers for the benchmark scripts: peak RSS of a computation, medians."""

import statistics
import time


def rss_reset() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return _status("VmRSS")


def hwm_mb() -> float:
    return _status("VmHWM")


def timed_peak(fn, runs):
    """Median wall time over ``runs`` calls of ``fn`` and the largest RSS growth (MiB) during one call."""
    times, peaks, out = [], [], None
    for _ in range(runs):
        out = None
        base = rss_mb()
        rss_reset()
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        peaks.append(max(hwm_mb() - base, 0.0))
    return statistics.median(times), max(peaks), out
