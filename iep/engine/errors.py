"""How a training run ends early, as exceptions: their own module so that anything may catch them
without importing the loop (distribute.py and cli.py do)."""

from __future__ import annotations


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; raised instead of training on garbage."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or Ctrl-C arrived: the loop stopped at a step boundary (the run resumes from its last checkpoint)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
