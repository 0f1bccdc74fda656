"""Pieces train.py and eval.py share: turning flag values into data and one-line errors."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from iep.datasets import DataError

USER_ERRORS = (ValueError, DataError, FileNotFoundError)


DIVERGED_EXIT = 3
PEER_LOST_EXIT = 4


def run_or_exit(main: Callable[[], object]) -> object:
    """Runs `main`; a bad input becomes one line on stderr and exit status 2, not a traceback. A diverged run
    exits 3, an interrupted one 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), a multi-worker
    run whose peer stopped 4, also in one line."""
    import tensorflow as tf

    from iep.engine.errors import TrainingDiverged, TrainingInterrupted

    try:
        return main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(DIVERGED_EXIT)
    except TrainingInterrupted as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(128 + error.signum)
    except tf.errors.UnavailableError as error:  # a peer crashed or was killed; TF's message names the task
        print(
            f"error: a task of the multi-worker run stopped ({_one_line(error.message)}); "
            "restart every task to resume from the last checkpoint",
            file=sys.stderr,
        )
        sys.exit(PEER_LOST_EXIT)


def _one_line(message: str) -> str:
    """The head of TF's multi-line runtime message: no `{{function_node ...}}` prefix, gRPC detail or advice."""
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    for tail in ("Additional GRPC error information", "The error could be from", "[Op:"):
        message = message.split(tail)[0]
    return " ".join(line.strip() for line in message.splitlines() if line.strip()).rstrip(" .")


def default_run_dir(dataset: str, data_dir: str | None, arch: str, distill: str, rate: float, seed: int) -> str:
    tag = os.path.basename(os.path.normpath(data_dir)) if dataset in ("tfrecord", "folder") and data_dir else dataset
    name = f"{tag}_{arch}_{distill}_r{rate:g}_s{seed}"
    return os.path.join("runs", re.sub(r"[^A-Za-z0-9_.-]", "_", name))
