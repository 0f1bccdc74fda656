"""ImageNet ResNet-18/34 of He et al. 2016 (basic blocks, post-activation), for 224-px transfer experiments.

Why these and not the paper's "ResNet-32 → ResNet-14": the author's published ResNet
(`KD_methods_with_TF/nets/ResNet.py`) defines, for inputs other than 32 px, five stages of
[32, 64, 128, 256, 512] channels behind a stride-1 3×3 stem (10n+2 layers: 12, 22, 32, ...), so no
ResNet-14 exists in it, and a stride-1 stem at 224 px costs ~16× the FLOPs of the standard one. ResNet-18/34
are the closest standard networks, the ones pretrained teachers come in (Keras Applications, KerasHub,
torchvision), and they keep the paper's "ResNet gives four points".

Layout: 7×7/2 conv (64) + BN + ReLU, 3×3/2 max pooling, four stages of [64, 128, 256, 512] channels with
[2, 2, 2, 2] (18) or [3, 4, 6, 3] (34) blocks, the first block of stages 2-4 with stride 2 and a 1×1
conv + BN shortcut (option B). Sensing points: each stage's output (after its last ReLU), at 224 px
56×56×64, 28×28×128, 14×14×256, 7×7×512.
"""

from __future__ import annotations

import keras

from iep.nets import layers as L

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
CHANNELS = (64, 128, 256, 512)


def _basic_block(x, out_channels: int, stride: int, name: str):
    out = L.conv(out_channels, 3, stride, name=f"{name}_conv0")(x)
    out = keras.layers.ReLU(name=f"{name}_relu0")(L.batch_norm(f"{name}_bn0")(out))
    out = L.batch_norm(f"{name}_bn1")(L.conv(out_channels, 3, 1, name=f"{name}_conv1")(out))
    if stride != 1 or x.shape[-1] != out_channels:
        x = L.batch_norm(f"{name}_bn2")(L.conv(out_channels, 1, stride, name=f"{name}_conv2")(x))
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([x, out]))


def check_arguments(depth: int) -> None:
    if depth not in BLOCKS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(BLOCKS)}; got {depth}")


def build(x: keras.KerasTensor, num_classes: int, depth: int) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    check_arguments(depth)
    x = L.conv(64, 7, 2, name="stem_conv")(x)
    x = keras.layers.ReLU(name="stem_relu")(L.batch_norm("stem_bn")(x))
    x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    taps = []
    for stage, (channels, blocks) in enumerate(zip(CHANNELS, BLOCKS[depth], strict=True), start=1):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 1 else 1
            x = _basic_block(x, channels, stride, f"stage{stage}_block{block}")
        taps.append(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return L.classifier(num_classes)(x), taps
