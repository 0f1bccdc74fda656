"""Running a stretch of steps: the progress bar, the TensorBoard interval, NaN and signal stops."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from iep.core.errors import TrainingDiverged, TrainingInterrupted, op_message
from iep.engine.step import RunningMeans
from iep.engine.train_config import TrainConfig


def run_steps(
    step_fn: Callable,
    batches: tf.data.Dataset,
    total_steps: int,
    means: RunningMeans,
    global_step: tf.Variable,
    learning_rate: Callable[[], float],
    writer: tf.summary.SummaryWriter,
    where: str,
    *,
    config: TrainConfig,
    distribute: Callable | None,
    stop_requested: list[int],
    last_checkpoint: Callable[[], str],
) -> None:
    """Runs `step_fn` over `batches` (at most `total_steps`), writing `means` every `config.log_every` steps.

    A NaN/Inf loss (the step's check_numerics) or a SIGTERM/Ctrl-C recorded in `stop_requested` stops here,
    naming `where` and the last checkpoint; `distribute` spreads the batches over replicas."""
    progress = keras.utils.Progbar(
        total_steps, verbose=1 if config.progress else 0, stateful_metrics=means.names, unit_name="step"
    )
    interval_started, interval_images = time.perf_counter(), 0
    batches = batches.take(total_steps)
    if distribute is not None:
        batches = distribute(batches)
    for step, batch in enumerate(batches, start=1):  # (images, labels, *the method's batch_extras)
        try:
            step_fn(*batch)
        except tf.errors.InvalidArgumentError as error:
            if "Tensor had NaN values" in str(error) or "Tensor had Inf values" in str(error):
                raise TrainingDiverged(
                    f"training diverged at {where}, step {step}: a loss became NaN/Inf "
                    f"({op_message(error)}). {last_checkpoint()} Lower TrainConfig.lr or check the data."
                ) from None
            raise
        if stop_requested:
            name = signal.Signals(stop_requested[0]).name
            raise TrainingInterrupted(
                f"stopped by {name} at {where}, step {step}. {last_checkpoint()} "
                "Re-run the same command to resume from it.",
                stop_requested[0],
            )
        interval_images += config.batch_size
        if step % config.log_every == 0 or step == total_steps:
            now = time.perf_counter()
            values = means.read_and_reset()
            with writer.as_default(step=int(global_step.numpy())):
                for name, value in values.items():
                    tf.summary.scalar(name, value)
                tf.summary.scalar(f"{means.prefix}learning_rate", learning_rate())
                tf.summary.scalar(
                    f"{means.prefix}throughput/images_per_second", interval_images / max(now - interval_started, 1e-9)
                )
            interval_started, interval_images = now, 0
            progress.update(step, [(k, v) for k, v in values.items() if k.endswith(("total", "accuracy/train"))])
        elif config.progress:
            progress.update(step)
