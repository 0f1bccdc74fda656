"""Type and range checks of a settings dataclass's fields, made where the settings are written (TrainConfig,
DataConfig, RunSpec): one loop, each error naming the field as a Python caller wrote it (`TrainConfig.lr`); the
commands say the flag instead (iep/apps/vocabulary.py)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Collection, Mapping
from typing import Any

# a field's name → (whether a value is in range, what is expected, in words)
Ranges = Mapping[str, tuple[Callable[[Any], bool], str]]


def check_numbers(
    owner: str,
    settings: object,
    ranges: Ranges,
    optional: Collection[str] = (),
    error: type[ValueError] = ValueError,
    integers: Collection[str] = (),
) -> None:
    """Every field of `ranges` a number (bools are not; an int for `integers`) and in range, None allowed for
    `optional` ones. Why the type first: from Python, rate="0.1" would otherwise fail as a bare TypeError naming
    no field."""
    for name in ranges:
        value = getattr(settings, name)
        kind, expected = (numbers.Integral, "an int") if name in integers else (numbers.Real, "a number")
        if (value is not None or name not in optional) and (not isinstance(value, kind) or isinstance(value, bool)):
            raise TypeError(f"{owner}.{name} must be {expected}, got {value!r}")
    for name, (in_range, expected) in ranges.items():
        value = getattr(settings, name)
        if (value is not None or name not in optional) and not in_range(value):
            raise error(f"{owner}.{name} must be {expected}, got {value}")


def check_bools(owner: str, settings: object, names: Collection[str]) -> None:
    """Each field of `names` True or False. Why: any string is truthy, so from Python progress="no" would switch
    the progress lines on without a word."""
    for name in names:
        value = getattr(settings, name)
        if not isinstance(value, bool):
            raise TypeError(f"{owner}.{name} must be True or False, got {value!r}")
