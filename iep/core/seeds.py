"""Distinct seeds for a module's random initializers and noise.

Why: a Keras 3 initializer with an integer seed returns the same tensor on every call, so one seeded initializer
(or one seed) reused for several layers starts them equal: VID's three regressor convs did, where two of them
have the same shape. Each initializer takes the next seed of its module's stream instead. An unseeded module
(seed None) stays unseeded: every initializer instance then draws its own default seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def seed_stream(seed: int | None) -> Iterator[int | None]:
    """Endless distinct seeds derived from `seed` (the same stream for the same seed), or Nones."""
    if seed is None:
        while True:
            yield None
    rng = np.random.default_rng(seed)
    drawn: set[int] = set()
    while True:
        value = int(rng.integers(0, 2**31 - 1))
        if value not in drawn:
            drawn.add(value)
            yield value
