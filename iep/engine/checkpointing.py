"""Epoch checkpoints through `tf.train.CheckpointManager`.

TensorFlow writes the checkpoint files first and swaps the `checkpoint`
index file in by rename, so an interrupted save leaves the previous
checkpoint as the latest. The dropout RNG states are saved explicitly: Keras
does not put `SeedGenerator` states in a model checkpoint, and without them
a resumed run would draw different dropout masks.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping

import keras
import tensorflow as tf

from iep.core.errors import op_message

CHECKPOINT_SUBDIR = "checkpoints"


def rng_states(model: keras.Model) -> list[keras.Variable]:
    return [v for v in model.variables if "seed_generator_state" in v.path]


# What restoring a damaged checkpoint raises: truncated data (IndexError "Read less bytes than requested"),
# flipped bits (DataLossError), missing files (NotFoundError, OSError), unreadable metadata (ValueError).
DAMAGE_ERRORS = (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError)


def describe_damage(error: BaseException) -> str:
    return f"{error.__class__.__name__}: {op_message(error, limit=160)}"


def checkpoint_exists(path: str) -> bool:
    """Whether `path` names something a checkpoint reader can try: a run or checkpoint folder, or a prefix
    (whose files are <prefix>.index and <prefix>.data-*, never <prefix> itself)."""
    return os.path.exists(path) or os.path.exists(path + ".index")


def checkpoint_candidates(directory: str) -> list[str]:
    """A folder's checkpoint prefixes, newest first (from the state file, or the index files if that is
    unreadable or missing)."""
    try:
        state = tf.train.get_checkpoint_state(directory)
        if state is not None:
            return list(reversed(state.all_model_checkpoint_paths or [state.model_checkpoint_path]))
    except Exception:  # a damaged state file: fall back to what is on disk
        pass
    indexes = glob.glob(os.path.join(directory, "*.index"))

    def number(prefix: str) -> int:
        tail = prefix.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    return sorted((p[: -len(".index")] for p in indexes), key=number, reverse=True)


class EpochCheckpoints:
    def __init__(
        self,
        run_dir: str,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        extra: Mapping[str, object] | None = None,
        max_to_keep: int = 3,
        chief: bool = True,
    ):
        """`chief=False` (a non-chief worker of a multi-worker run): restore from the run's checkpoints but save
        into a private temporary folder — every worker must take part in a save, only the chief's is kept."""
        self.run_directory = os.path.join(run_dir, CHECKPOINT_SUBDIR)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_completed")
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, epoch=self.epoch, rng=rng_states(model), **dict(extra or {})
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self.run_directory if chief else tempfile.mkdtemp(prefix="iep_worker_checkpoints_"),
            max_to_keep=max_to_keep,
            checkpoint_name="epoch",
        )

    def restore_latest(self) -> int:
        """Restores the newest intact checkpoint if any; returns the number of completed epochs.

        A damaged newer checkpoint (truncated, bit-flipped, missing files) is skipped with a warning on
        stderr naming it; if none is intact, ValueError names them all.
        """
        damaged = []
        for path in checkpoint_candidates(self.run_directory):  # joined with the folder, as the state file's are
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except DAMAGE_ERRORS as error:
                _silence_unrestored_value_warnings()
                damaged.append(f"{path} ({describe_damage(error)})")
                continue
            if damaged:
                print(
                    f"warning: skipped damaged checkpoint {'; '.join(damaged)}; resuming from {path}", file=sys.stderr
                )
            return int(self.epoch.numpy())
        if damaged:
            raise ValueError(
                f"no intact checkpoint in {self.run_directory}: {'; '.join(damaged)}; "
                "use Trainer.fit(resume=False) to start over (the damaged files are moved aside)"
            )
        return 0

    def discard_private(self) -> None:
        """A non-chief worker's saves are only its part of the collective save: delete them when done."""
        if os.path.normpath(self.manager.directory) != os.path.normpath(self.run_directory):
            shutil.rmtree(self.manager.directory, ignore_errors=True)

    def last_checkpoint_sentence(self) -> str:
        """Names the newest checkpoint on disk (the one a resume starts from), never a guessed epoch."""
        latest = self.manager.latest_checkpoint
        run_dir = os.path.dirname(self.run_directory)
        return f"The last checkpoint is {latest}." if latest else f"No checkpoint was written yet in {run_dir}."

    def mark_epoch(self, epochs_completed: int) -> None:
        self.epoch.assign(epochs_completed)

    def save(self, number: int) -> str:
        """Saves as `epoch-<number>`; `number` counts pre-phase passes and epochs together.

        A failed save (disk full, read-only) removes TensorFlow's half-written `*_temp*` files and is one
        ValueError naming the folder; the previous checkpoint stays the latest.
        """
        try:
            return self.manager.save(checkpoint_number=number)
        except (tf.errors.OpError, OSError) as error:
            for leftover in glob.glob(os.path.join(self.manager.directory, "*_temp*")):
                if os.path.isdir(leftover):
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    os.remove(leftover)
            raise ValueError(
                f"cannot write checkpoint epoch-{number} in {self.manager.directory} "
                f"({describe_damage(error)}); free space or fix the "
                "permissions, then re-run the same command to resume from the last checkpoint"
            ) from None


class _DropUnrestoredValueWarnings(logging.Filter):
    """A restore that fails half-way leaves TensorFlow to log every value it did not restore when the
    objects are deleted, often at exit: hundreds of lines after, and burying, the error we raise."""

    PREFIXES = (
        "Detecting that an object or model or tf.train.Checkpoint is being deleted with unrestored values",
        "Value in checkpoint could not be found in the restored object",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIXES)


def _silence_unrestored_value_warnings() -> None:
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _DropUnrestoredValueWarnings) for f in logger.filters):
        logger.addFilter(_DropUnrestoredValueWarnings())


def restore_part(prefix: str, **trackables) -> None:
    """Restores `trackables` from the checkpoint `prefix`, whose other values are expected and left alone.

    Raises ValueError with TensorFlow's first line when the checkpoint lacks
    them or holds other shapes.
    """
    try:
        tf.train.Checkpoint(**trackables).restore(prefix).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        _silence_unrestored_value_warnings()
        raise ValueError(str(error).splitlines()[0][:300]) from None


def restore_model_weights(model: keras.Model, path: str) -> str:
    """Restores only the model part of one of our checkpoints (a prefix, or a run dir's newest intact one);
    returns the prefix it read.

    A run dir's damaged newer checkpoints are skipped with a warning naming them, as resuming does; ValueError
    names `path` when no checkpoint is intact, or the model when the checkpoint holds another network.
    """
    if not os.path.isdir(path):
        candidates = [path]
    else:
        directory = path if checkpoint_candidates(path) else os.path.join(path, CHECKPOINT_SUBDIR)
        candidates = checkpoint_candidates(directory)
        if not candidates:
            raise ValueError(f"{path!r} holds no checkpoint (looked in {directory!r})")
    damaged = []
    for prefix in candidates:
        try:
            reader = tf.train.load_checkpoint(prefix)
            reader.get_variable_to_shape_map()
        except DAMAGE_ERRORS as error:
            damaged.append(f"{prefix} ({describe_damage(error)})")
            continue
        try:
            tf.train.Checkpoint(model=model).restore(prefix).expect_partial().assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:  # another network's (missing values, other shapes)
            _silence_unrestored_value_warnings()
            message = str(error).splitlines()[0][:300]
            raise ValueError(f"checkpoint {prefix!r} does not match the {model.name!r} network: {message}") from None
        except (tf.errors.OpError, IndexError, OSError) as error:  # damaged data files
            _silence_unrestored_value_warnings()
            damaged.append(f"{prefix} ({describe_damage(error)})")
            continue
        if damaged:
            print(f"warning: skipped damaged checkpoint {'; '.join(damaged)}; read {prefix}", file=sys.stderr)
        return prefix
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a readable checkpoint ({damaged[0].split(' (', 1)[1]}")
    raise ValueError(f"{path!r}: no intact checkpoint ({'; '.join(damaged)})")
