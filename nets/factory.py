"""Architecture names → TappedNetwork, with one clear error for unknown names."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence

import keras

from iep.nets import imagenet_resnet, mobilenet_v2, resnet, vgg, wide_resnet
from iep.nets import layers as L
from iep.nets.base import TappedNetwork

ARCH_HELP = (
    "wrn-<depth>-<width> (e.g. wrn-16-4, wrn-40-4), resnet<depth> (CIFAR 6n+2, e.g. resnet20), "
    "resnet<18|34>-imagenet (224 px), "
    "mobilenetv2[-<alpha>], vgg<8|11|13|16|19>"
)

# Each family: its name pattern, its module (`check_arguments` and `build`), and the arguments as that module
# takes them. Checking them in `parse_arch` makes a name that parses but cannot build fail before any data is read.
_FAMILIES = (
    (re.compile(r"^wrn-(\d+)-(\d+)$"), "wrn", wide_resnet, lambda groups: (int(groups[0]), int(groups[1]))),
    (re.compile(r"^resnet(\d+)$"), "resnet", resnet, lambda groups: (int(groups[0]),)),
    (re.compile(r"^resnet(\d+)-imagenet$"), "imagenet_resnet", imagenet_resnet, lambda groups: (int(groups[0]),)),
    (
        re.compile(r"^mobilenetv2(?:-(\d*\.?\d+))?$"),
        "mobilenetv2",
        mobilenet_v2,
        lambda groups: (float(groups[0]) if groups[0] else 1.0,),
    ),
    (re.compile(r"^vgg(\d+)$"), "vgg", vgg, lambda groups: (int(groups[0]),)),
)
_MODULES = {family: module for _, family, module, _ in _FAMILIES}


def parse_arch(arch: str) -> tuple[str, tuple]:
    """Returns (family, the builder's arguments) or raises ValueError naming the accepted forms or the size at
    fault."""
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a name such as 'wrn-16-1'; got {type(arch).__name__}")
    name = arch.strip().lower()
    for pattern, family, module, arguments in _FAMILIES:
        match = pattern.match(name)
        if match:
            args = arguments(match.groups())
            module.check_arguments(*args)
            return family, args
    raise ValueError(f"unknown architecture {arch!r}; expected {ARCH_HELP}")


def default_dropout(arch: str, image_size: int) -> float:
    """The original uses dropout 0.3 inside WRN blocks for 32×32 inputs only."""
    return 0.3 if parse_arch(arch)[0] == "wrn" and image_size <= 64 else 0.0


def build_network(
    arch: str,
    num_classes: int,
    input_shape: Sequence[int] = (32, 32, 3),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dropout: float | None = None,
    name: str | None = None,
) -> TappedNetwork:
    """Builds `arch` for raw-pixel input standardized by (mean, std) inside the network.

    `mean`/`std`: one value per channel; None leaves the pixels as they are (0 and 1 on every channel).
    `dropout=None` applies the architecture's default (see `default_dropout`).
    """
    family, args = parse_arch(arch)
    num_classes = _checked_count(num_classes)
    input_shape = checked_input_shape(input_shape, "build_network")
    channels = input_shape[-1]
    mean = _per_channel("mean", (0.0,) * channels if mean is None else mean, channels)
    std = L.positive_std(_per_channel("std", (1.0,) * channels if std is None else std, channels), "build_network")
    if dropout is None:
        dropout = default_dropout(arch, input_shape[0])
    if not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    inputs = keras.Input(shape=input_shape, name="images")
    x = L.Standardize(mean, std, name="standardize")(inputs)
    wrn_dropout = (dropout,) if family == "wrn" else ()  # only the WRN blocks hold dropout
    logits, taps = _MODULES[family].build(x, num_classes, *args, *wrn_dropout)
    return TappedNetwork(arch, inputs, logits, taps, name=name or re.sub(r"[^a-z0-9_]", "_", arch.lower()))


def _checked_count(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"build_network: num_classes must be an int, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return int(num_classes)


def checked_input_shape(input_shape: object, caller: str) -> tuple[int, int, int]:
    """`input_shape` as (height, width, channels), or a ValueError naming `caller`. Why: a 2-tuple would reach a
    layer as 'width channels' and fail there, in its words (or be read as a model without feature maps)."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise ValueError(
            f"{caller}: input_shape must be (height, width, channels) of positive ints, got {input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def _per_channel(argument: str, values: object, channels: int) -> tuple[float, ...]:
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"build_network: {argument} must be numbers, one per channel; got {values!r}") from None
    if len(floats) != channels or not all(math.isfinite(v) for v in floats):
        raise ValueError(
            f"build_network: {argument} must be {channels} finite numbers (one per channel of input_shape), "
            f"got {values!r}"
        )
    return floats
