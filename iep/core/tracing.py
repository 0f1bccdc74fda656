"""`tf.function`s counted per object, so that building several trainers in one process is not called retracing.

Why: TensorFlow's frequent-retracing warning ("5 out of the last 5 calls to <function ...> triggered
tf.function retracing") keys its counts by a function's code object. Every `Trainer` (and every view that
compiles a step over a network) builds its own `tf.function` from the same code, which rightly traces once for
its own model; a sweep, a notebook or a test session that builds a few of them got the warning, though nothing
retraced. Wrapped in a `functools.partial` (a new object without `__code__`), each one is counted apart: a
function that really retraces (a shape that changes every call) still warns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import tensorflow as tf


def traced(fn: Callable | None = None, /, **options) -> Callable:
    """`tf.function(fn, **options)`, with retracing counted for this function alone; a decorator too."""
    if fn is None:
        return lambda function: traced(function, **options)
    return tf.function(functools.partial(fn), **options)
