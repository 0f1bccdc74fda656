"""CIFAR ResNet-(6n+2) of He et al. 2016 (ResNet-8/14/20/32/56/110), post-activation.

Shortcuts that change shape use a 1×1 conv + BN (option B), as the author's
TF benchmarks do. Sensing points: the output of each of the three stages
(32×32×16, 16×16×32, 8×8×64 on CIFAR), at the same resolutions as a WRN's.
"""

from __future__ import annotations

import keras

from iep.nets import layers as L


def _basic_block(x, out_channels: int, stride: int, name: str):
    out = L.conv(out_channels, 3, stride, name=f"{name}_conv0")(x)
    out = keras.layers.ReLU(name=f"{name}_relu0")(L.batch_norm(f"{name}_bn0")(out))
    out = L.conv(out_channels, 3, 1, name=f"{name}_conv1")(out)
    out = L.batch_norm(f"{name}_bn1")(out)
    if stride != 1 or x.shape[-1] != out_channels:
        x = L.batch_norm(f"{name}_bn2")(L.conv(out_channels, 1, stride, name=f"{name}_conv2")(x))
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([x, out]))


def check_arguments(depth: int) -> None:
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (e.g. 8, 14, 20, 32, 56); got {depth}")


def build(x: keras.KerasTensor, num_classes: int, depth: int) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    check_arguments(depth)
    blocks_per_stage = (depth - 2) // 6
    x = L.conv(16, 3, 1, name="stem_conv")(x)
    x = keras.layers.ReLU(name="stem_relu")(L.batch_norm("stem_bn")(x))
    taps = []
    for stage, (c, s) in enumerate(zip((16, 32, 64), (1, 2, 2), strict=True), start=1):
        for block in range(blocks_per_stage):
            x = _basic_block(x, c, s if block == 0 else 1, f"stage{stage}_block{block}")
        taps.append(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return L.classifier(num_classes)(x), taps
