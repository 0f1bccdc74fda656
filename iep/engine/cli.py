"""Pieces train.py and eval.py share: turning flag values into data and one-line errors."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from datasets import DataError

USER_ERRORS = (ValueError, DataError, FileNotFoundError)


DIVERGED_EXIT = 3


def run_or_exit(main: Callable[[], object]) -> object:
    """Runs `main`; a bad input becomes one line on stderr and exit status 2, not a traceback. A diverged run
    exits 3, an interrupted one 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), also in one line."""
    from iep.engine.trainer import TrainingDiverged, TrainingInterrupted

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


def default_run_dir(dataset: str, data_dir: str | None, arch: str, distill: str, rate: float, seed: int) -> str:
    tag = os.path.basename(os.path.normpath(data_dir)) if dataset in ("tfrecord", "folder") and data_dir else dataset
    name = f"{tag}_{arch}_{distill}_r{rate:g}_s{seed}"
    return os.path.join("runs", re.sub(r"[^A-Za-z0-9_.-]", "_", name))
