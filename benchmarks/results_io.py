"""What every benchmark records beside its numbers: the command, the machine and the versions."""

from __future__ import annotations

import os
import platform
import sys

import keras
import tensorflow as tf

from iep.core.files import write_json_atomic


def cpu_model() -> str | None:
    """The processor's name (Linux), which `platform.processor()` leaves empty: timings depend on it."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def write_results(path: str, settings: dict, results: list, machine_load: dict | None = None) -> None:
    """`machine_load`: a timing benchmark's `benchmarks.timing.MachineWatch` record (was the machine quiet)."""
    load = {"machine_load": machine_load} if machine_load is not None else {}
    write_json_atomic(
        path,
        {
            "command": "python " + " ".join(sys.argv),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpu_model": cpu_model(),
                "gpus": len(tf.config.list_physical_devices("GPU")),
            },
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            **settings,
            **load,
            "results": results,
        },
    )
    print(f"wrote {path}")
