"""How a training run ends early, as exceptions: their own module so that anything may catch them
without importing the loop (distribute.py and cli.py do)."""

from __future__ import annotations

import re


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; raised instead of training on garbage."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or Ctrl-C arrived: the loop stopped at a step boundary (the run resumes from its last checkpoint)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# What TensorFlow wraps around an op's own message (the function it ran in, the tf.data stage, the node, the op).
_TF_WRAPPING = (
    r"\{\{function_node [^}]*\}\}\s*",
    r"^\s*Graph execution error:\s*",
    # a graph op's Python stack: "Detected at node N defined at (most recent call last):" and indented frames
    r"Detected at node \S+ defined at \(most recent call last\):\n(?:(?:[ \t]+.*)?\n)*",
    r"Error in user-defined function passed to \S+ transformation with iterator: \S+:\s*",
)
_TF_TAILS = ("\t [[", " [[{{node", "[Op:", "Additional GRPC error information", "The error could be from")


def op_message(error: BaseException, limit: int = 240) -> str:
    """An error's message as one readable line: for a TensorFlow op error, the op's own words without the
    wrapping (`{{function_node ...}}`, "Graph execution error:", the node's Python stack, the tf.data stage,
    `[[{{node ...}}]]`, `[Op:...]`); cut at a word boundary past `limit` characters (never mid-word)."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    for pattern in _TF_WRAPPING:
        text = re.sub(pattern, "", text)
    for tail in _TF_TAILS:
        text = text.split(tail)[0]
    text = " ".join(line.strip() for line in text.splitlines() if line.strip()).rstrip(" .")
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return text
