"""CPU time beside wall time, and whether the machine was quiet: what every timing benchmark records.

Why: wall time measures the machine as much as the code. Beside another job, or when the host throttles the
virtual machine, a step's wall time comes in multiples of the scheduler's period (0.284, 0.341, 0.478, 0.684 s
per round in one run of keras_distillation.py), and interleaving two contenders' rounds did not protect their
ratio. The CPU time of the process counts the work itself. So every timing benchmark reports both, takes its
ratios from CPU time with their spread over rounds, and records how busy the machine was at its start and end:
the load average, the other processes that used a CPU, and the share of CPU time the hypervisor took (steal).
When the machine was not quiet it says so, aloud and in its results file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Sequence

BUSY_CPU_PERCENT = 10.0  # another process using this much of one core makes the machine not quiet
BUSY_STEAL_PERCENT = 5.0  # so does a hypervisor taking this share of the CPU time during the benchmark


@dataclasses.dataclass
class Timing:
    wall: float = 0.0  # seconds
    cpu: float = 0.0  # CPU seconds of this process (all its threads) and of the children it waited for


def cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def timed() -> Iterator[Timing]:
    """`with timed() as t: ...` fills `t.wall` and `t.cpu` when the block ends."""
    timing = Timing()
    wall, cpu = time.perf_counter(), cpu_seconds()
    try:
        yield timing
    finally:
        timing.wall, timing.cpu = time.perf_counter() - wall, cpu_seconds() - cpu


def spread(values: Sequence[float]) -> dict:
    """Median and range of repeated measurements (the median resists one disturbed round)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": list(values)}


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict:
    """median(numerator) / median(denominator), with the range of the round-by-round ratios as its spread."""
    rounds = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return {
        "ratio": statistics.median(numerator) / statistics.median(denominator),
        "min": min(rounds),
        "max": max(rounds),
    }


def _cpu_counters() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs since boot (Linux); None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def busy_processes(sample_seconds: float = 1.0) -> list[dict]:
    """The other processes that used at least BUSY_CPU_PERCENT of a core over `sample_seconds` (not this one,
    nor its children)."""
    import psutil

    me = psutil.Process()
    own = {me.pid, *(child.pid for child in me.children(recursive=True))}
    candidates = [p for p in psutil.process_iter(["name", "cmdline"]) if p.pid not in own]
    for process in candidates:
        with contextlib.suppress(psutil.Error):
            process.cpu_percent(None)
    time.sleep(sample_seconds)
    busy = []
    for process in candidates:
        with contextlib.suppress(psutil.Error):
            percent = process.cpu_percent(None)
            if percent >= BUSY_CPU_PERCENT:
                command = " ".join(process.info["cmdline"] or [process.info["name"] or "?"])
                busy.append({"pid": process.pid, "cpu_percent": percent, "command": command[:160]})
    return busy


def machine_state() -> dict:
    return {"load_average": [round(v, 2) for v in os.getloadavg()], "busy_processes": busy_processes()}


class MachineWatch:
    """How busy the machine was at a benchmark's start and end (`MachineWatch()` at the start, `finish()` at the
    end): the record its results file keeps under "machine_load"."""

    def __init__(self) -> None:
        self.start = machine_state()
        self._counters = _cpu_counters()

    def finish(self) -> dict:
        end = machine_state()
        counters = _cpu_counters()
        steal = None
        if self._counters and counters and counters[1] > self._counters[1]:
            steal = 100.0 * (counters[0] - self._counters[0]) / (counters[1] - self._counters[1])
        busy: dict[int, dict] = {}  # each process once, at its busiest
        for process in self.start["busy_processes"] + end["busy_processes"]:
            if process["cpu_percent"] > busy.get(process["pid"], {"cpu_percent": -1.0})["cpu_percent"]:
                busy[process["pid"]] = process
        reasons = [f"pid {p['pid']} at {p['cpu_percent']:.0f} % CPU: {p['command'][:100]}" for p in busy.values()]
        if steal is not None and steal >= BUSY_STEAL_PERCENT:
            reasons.append(f"the hypervisor took {steal:.1f} % of the CPU time")
        if reasons:
            print("warning: the machine was not quiet during this benchmark, so its wall times measure the load as "
                  "much as the code; ratios are taken from CPU time: " + "; ".join(reasons))  # fmt: skip
        return {"quiet": not reasons, "start": self.start, "end": end, "steal_percent": steal, "not_quiet": reasons}


def per_call(fn: Callable, *args, warmup: int, calls: int, sync: Callable | None = None) -> list[Timing]:
    """Wall and CPU time of each of `calls` calls of `fn(*args)` after `warmup` untimed ones (tracing). `sync`
    takes the call's result and waits for it (TensorFlow may return before the work is done); by default every
    tensor in the result is read."""
    sync = sync or _read_tensors
    for _ in range(warmup):
        sync(fn(*args))
    timings = []
    for _ in range(calls):
        with timed() as t:
            sync(fn(*args))
        timings.append(t)
    return timings


def _read_tensors(out) -> None:
    import tensorflow as tf

    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)


def clocks(timings: Sequence[Timing]) -> dict:
    """{"cpu": spread, "wall": spread} of repeated timings."""
    return {clock: spread([getattr(t, clock) for t in timings]) for clock in ("cpu", "wall")}
