"""Pre-activation Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), as in IEPKT `nets/WResNet.py`.

Sensing points (docs/methods.md §1): the BN-ReLU pre-activations entering the first
block of stages 2 and 3, and the final BN-ReLU before pooling. For WRN-x-4 on
32×32 input that is 32×32×64, 16×16×128, 8×8×256.
"""

from __future__ import annotations

import keras

from iep.nets import layers as L


def _basic_block(x, out_channels: int, stride: int, dropout: float, name: str):
    """Returns (block output, pre-activation of its input)."""
    equal_in_out = x.shape[-1] == out_channels
    preact = keras.layers.ReLU(name=f"{name}_preact")(L.batch_norm(f"{name}_bn")(x))
    out = L.conv(out_channels, 3, stride, name=f"{name}_conv0")(preact)
    out = keras.layers.ReLU(name=f"{name}_relu0")(L.batch_norm(f"{name}_bn0")(out))
    # Always present (rate 0 is a no-op): checkpoints match functional layers by position, so the
    # layer list must not depend on the rate (a teacher trained with dropout is rebuilt without).
    out = keras.layers.Dropout(dropout, name=f"{name}_dropout")(out)
    out = L.conv(out_channels, 3, 1, name=f"{name}_conv1")(out)
    shortcut = x if equal_in_out else L.conv(out_channels, 1, stride, name=f"{name}_conv2")(preact)
    return keras.layers.Add(name=f"{name}_add")([shortcut, out]), preact


def check_arguments(depth: int, width: int) -> None:
    """Refuses a WRN the blocks cannot build, before Keras fails inside a layer."""
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (e.g. 16, 28, 40); got {depth}")
    if width < 1:
        raise ValueError(f"WRN width must be >= 1 (e.g. 1, 4, 10); got {width}")


def build(
    x: keras.KerasTensor, num_classes: int, depth: int, width: int, dropout: float
) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    """Returns (logits, taps). `x` is the standardized image tensor."""
    check_arguments(depth, width)
    blocks_per_stage = (depth - 4) // 6
    channels = [16 * width, 32 * width, 64 * width]
    large_input = x.shape[1] is not None and x.shape[1] > 64
    x = L.conv(16, 7 if large_input else 3, 2 if large_input else 1, name="stem_conv")(x)
    taps = []
    for stage, (c, s) in enumerate(zip(channels, (1, 2, 2), strict=True), start=1):
        for block in range(blocks_per_stage):
            x, preact = _basic_block(x, c, s if block == 0 else 1, dropout, f"stage{stage}_block{block}")
            if block == 0 and stage > 1:
                taps.append(preact)
    x = keras.layers.ReLU(name="final_preact")(L.batch_norm("final_bn")(x))
    taps.append(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return L.classifier(num_classes)(x), taps
