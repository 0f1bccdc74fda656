"""Pieces train.py and eval.py share: turning flag values into data and one-line errors."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from datasets import DataError

USER_ERRORS = (ValueError, DataError, FileNotFoundError)


def run_or_exit(main: Callable[[], object]) -> object:
    """Runs `main`; a bad input becomes one line on stderr and exit status 2, not a traceback."""
    try:
        return main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def default_run_dir(dataset: str, data_dir: str | None, arch: str, distill: str, rate: float, seed: int) -> str:
    tag = os.path.basename(os.path.normpath(data_dir)) if dataset in ("tfrecord", "folder") and data_dir else dataset
    name = f"{tag}_{arch}_{distill}_r{rate:g}_s{seed}"
    return os.path.join("runs", re.sub(r"[^A-Za-z0-9_.-]", "_", name))
