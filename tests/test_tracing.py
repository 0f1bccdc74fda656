"""Several trainers in one process are not warned about as retracing; a function that retraces still is."""

from __future__ import annotations

import logging
import pathlib

import tensorflow as tf

from iep.core.tracing import traced

ROOT = pathlib.Path(__file__).resolve().parents[1]


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _retracing_warnings(run) -> list[str]:
    handler = _Warnings()
    tf.get_logger().addHandler(handler)
    try:
        run()
    finally:
        tf.get_logger().removeHandler(handler)
    return [m for m in handler.messages if "triggered tf.function retracing" in m]


def _square_builder(wrap):
    def build(scale: float):
        return wrap(lambda x: scale * x * x)  # one code object, as every Trainer's step shares one

    return build


def test_functions_built_from_one_code_are_counted_apart():
    def run(wrap):
        for scale in range(7):  # seven "trainers", each tracing its own function once
            _square_builder(wrap)(float(scale))(tf.ones([3]))

    assert _retracing_warnings(lambda: run(tf.function))  # what the trainers met with plain tf.function
    assert not _retracing_warnings(lambda: run(traced))


def test_a_function_that_retraces_still_warns():
    square = traced(lambda x: x * x)
    assert _retracing_warnings(lambda: [square(tf.ones([n])) for n in range(1, 8)])


def test_the_package_builds_its_steps_with_traced():
    """Every per-object step goes through `traced`; a serving signature (export) is traced once per export."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "iep").rglob("*.py")
        if path.name not in ("tracing.py", "export.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "tf.function(" in line or line.strip() == "@tf.function"
    ]
    assert not offenders, offenders
