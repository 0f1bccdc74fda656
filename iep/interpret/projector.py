"""Files for TensorBoard's Embedding Projector: vectors (TSV), metadata, a sprite of the images, the config."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from tensorboard.plugins import projector

MAX_SPRITE_SIDE = 8192  # the projector's limit in pixels


def sprite(images: np.ndarray) -> np.ndarray:
    """A square grid of the images [N, h, w, 3] (uint8), row-major, padded with black."""
    count, h, w = images.shape[:3]
    side = math.ceil(math.sqrt(count))
    if side * max(h, w) > MAX_SPRITE_SIDE:
        raise ValueError(f"{count} images of {h}×{w} exceed the projector's {MAX_SPRITE_SIDE}px sprite; lower limit=")
    grid = np.zeros((side * h, side * w, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, side)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    return grid


def write_projector(
    log_dir: str,
    tensors: Mapping[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
    mean_colour: np.ndarray,
    images: np.ndarray | None,
) -> None:
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "metadata.tsv"), "w") as f:
        f.write("label\tclass\tmean_colour\n")
        for label, colour in zip(labels, mean_colour, strict=True):
            hex_colour = "#" + "".join(f"{int(round(255 * c)):02x}" for c in colour)
            f.write(f"{label}\t{class_names[label]}\t{hex_colour}\n")
    if images is not None:
        plt.imsave(os.path.join(log_dir, "sprite.png"), sprite(images))
    config = projector.ProjectorConfig()
    for name, values in tensors.items():
        np.savetxt(os.path.join(log_dir, f"{name}.tsv"), values, delimiter="\t", fmt="%.5g")
        embedding = config.embeddings.add()
        embedding.tensor_name = name
        embedding.tensor_path = f"{name}.tsv"
        embedding.metadata_path = "metadata.tsv"
        if images is not None:
            embedding.sprite.image_path = "sprite.png"
            embedding.sprite.single_image_dim.extend([images.shape[2], images.shape[1]])
    projector.visualize_embeddings(log_dir, config)
