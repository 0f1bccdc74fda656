"""MobileNet-V2 (Sandler et al. 2018) with CIFAR strides.

The stem and the first two strided groups of the ImageNet version run at
stride 1 so that the stage outputs sit at 32×32, 16×16 and 8×8 on 32×32 input,
the resolutions of a WRN's sensing points. Parameter count is unchanged from
the ImageNet version (strides carry no weights). Sensing points: the output of
the last 32×32 group (24·α ch), of the 16×16 group (32·α ch), and the final
1×1 expansion to 1280 channels (8×8).
"""

from __future__ import annotations

import keras

from iep.nets import layers as L

# (expansion t, channels c, repeats n, stride s); strides adapted to 32×32 input.
_CIFAR_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 1),
    (6, 320, 1, 1),
)
_IMAGENET_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def _make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _inverted_residual(x, expansion: int, out_channels: int, stride: int, name: str):
    in_channels = x.shape[-1]
    out = x
    if expansion != 1:
        out = L.conv(in_channels * expansion, 1, name=f"{name}_expand")(out)
        out = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(L.batch_norm(f"{name}_expand_bn")(out))
    out = L.depthwise_conv(3, stride, name=f"{name}_depthwise")(out)
    out = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(L.batch_norm(f"{name}_depthwise_bn")(out))
    out = L.batch_norm(f"{name}_project_bn")(L.conv(out_channels, 1, name=f"{name}_project")(out))
    if stride == 1 and in_channels == out_channels:
        out = keras.layers.Add(name=f"{name}_add")([x, out])
    return out


def check_arguments(alpha: float) -> None:
    if not alpha > 0:
        raise ValueError(f"MobileNetV2 width multiplier must be > 0 (e.g. 0.5, 1.0); got {alpha:g}")


def build(
    x: keras.KerasTensor, num_classes: int, alpha: float = 1.0
) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    check_arguments(alpha)
    large_input = x.shape[1] is not None and x.shape[1] > 64
    strides = _IMAGENET_STRIDES if large_input else [s for *_, s in _CIFAR_SETTINGS]
    x = L.conv(_make_divisible(32 * alpha), 3, 2 if large_input else 1, name="stem_conv")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(L.batch_norm("stem_bn")(x))
    taps = []
    for group, ((t, c, n, _), s) in enumerate(zip(_CIFAR_SETTINGS, strides, strict=True)):
        for i in range(n):
            x = _inverted_residual(x, t, _make_divisible(c * alpha), s if i == 0 else 1, f"group{group}_block{i}")
        if group in (1, 2):
            taps.append(x)
    last_channels = _make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = L.conv(last_channels, 1, name="head_conv")(x)
    x = keras.layers.ReLU(6.0, name="head_relu")(L.batch_norm("head_bn")(x))
    taps.append(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return L.classifier(num_classes)(x), taps
