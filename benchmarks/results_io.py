"""What every benchmark records beside its numbers: the command, the machine and the versions."""

from __future__ import annotations

import os
import platform
import sys

import keras
import tensorflow as tf

from iep.engine.files import write_json_atomic


def write_results(path: str, settings: dict, results: list) -> None:
    write_json_atomic(
        path,
        {
            "command": "python " + " ".join(sys.argv),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "processor": platform.processor(),
                "gpus": len(tf.config.list_physical_devices("GPU")),
            },
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            **settings,
            "results": results,
        },
    )
    print(f"wrote {path}")
