"""VGG with batch norm and leaky ReLU (slope 0.1), CIFAR layout as in RepDistiller.

Five conv blocks separated by 2×2 max pooling (32→16→8→4→2), global average
pooling and one dense classifier. Sensing points: the outputs of the first
three blocks (32×32×64, 16×16×128, 8×8×256), the WRN's resolutions.
"""

from __future__ import annotations

import keras

from iep.nets import layers as L

CONFIGS = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}
LEAKY_SLOPE = 0.1


def check_arguments(depth: int) -> None:
    if depth not in CONFIGS:
        raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}; got {depth}")


def build(x: keras.KerasTensor, num_classes: int, depth: int) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    check_arguments(depth)
    taps = []
    for block, widths in enumerate(CONFIGS[depth]):
        if block > 0:
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        for i, width in enumerate(widths):
            x = L.conv(width, 3, name=f"block{block}_conv{i}")(x)
            x = keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"block{block}_relu{i}")(
                L.batch_norm(f"block{block}_bn{i}")(x)
            )
        if block < 3:
            taps.append(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return L.classifier(num_classes)(x), taps
