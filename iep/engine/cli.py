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


def run_or_exit(main: Callable[[], object], translate: Callable[[str], str] = str) -> object:
    """Runs `main`; a bad input becomes one line on stderr and exit status 2, not a traceback. A diverged run
    exits 3, an interrupted one 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), a multi-worker
    run whose peer stopped 4, also in one line. `translate` puts the library's words into the command's
    (iep/apps/vocabulary.py: `TrainConfig.lr` → `--lr`)."""
    import tensorflow as tf

    from iep.core.errors import TrainingDiverged, TrainingInterrupted, op_message

    try:
        return main()
    except USER_ERRORS as error:
        print(f"error: {translate(str(error))}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as error:
        print(f"error: {translate(str(error))}", file=sys.stderr)
        sys.exit(DIVERGED_EXIT)
    except TrainingInterrupted as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(128 + error.signum)
    except tf.errors.UnavailableError as error:  # a peer crashed or was killed; TF's message names the task
        print(
            f"error: a task of the multi-worker run stopped ({op_message(error, limit=400)}); "
            "restart every task to resume from the last checkpoint",
            file=sys.stderr,
        )
        sys.exit(PEER_LOST_EXIT)


def number_list(flag: str, values: list[str] | None, kind: type = float) -> list:
    """A comma-separated flag's items as numbers; a bad item is one error naming the flag (absl's DEFINE_list
    gives strings)."""
    out = []
    for value in values or ():
        try:
            out.append(kind(value))
        except ValueError:
            noun = "integers" if kind is int else "numbers"
            raise ValueError(f"--{flag} takes comma-separated {noun}, got {value!r}") from None
    return out


def default_run_dir(dataset: str, data_dir: str | None, arch: str, distill: str, rate: float, seed: int) -> str:
    tag = os.path.basename(os.path.normpath(data_dir)) if dataset in ("tfrecord", "folder") and data_dir else dataset
    name = f"{tag}_{arch}_{distill}_r{rate:g}_s{seed}"
    return os.path.join("runs", re.sub(r"[^A-Za-z0-9_.-]", "_", name))
