"""Stateless, seeded augmentations, so a resumed epoch sees exactly the same images.

Small images (CIFAR protocol): random horizontal flip, reflect-pad 4 and a
random crop back to size, done on whole uint8 batches (one op per batch, not
per image). Large images (transfer protocol): random-resized-crop + flip for
training, resize + center crop for evaluation.
"""

from __future__ import annotations

import tensorflow as tf

PAD = 4
RESIZE_RATIO = 0.875  # eval: resize the shorter side to size/0.875, then center-crop (224 <- 256)


def augment_seed(seed: int, epoch: int, index: tf.Tensor) -> tf.Tensor:
    """The stateless seed pair of batch (or image) `index` of `epoch`: what makes an epoch's augmentation a pure
    function of (seed, epoch, index), shared by every pipeline."""
    return tf.stack([tf.constant(seed * 1_000_003 + epoch, tf.int64), tf.cast(index, tf.int64)])


def flip_pad_crop_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """images: [B, S, S, C] any dtype; seed: int32/int64 [2]. Same shape out."""
    batch, size = tf.shape(images)[0], tf.shape(images)[1]
    flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, minval=0, maxval=2 * PAD + 1, dtype=tf.int32)
    window = tf.range(size)
    rows = offsets[:, :1] + window[None, :]
    cols = offsets[:, 1:] + window[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def random_resized_crop(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """Inception-style crop (area 8-100%, aspect 3/4-4/3) + flip, to float32 [size, size, 3]."""
    box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        tf.zeros([0, 0, 4], tf.float32),
        seed=box_seed,
        area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    crop = tf.image.resize(tf.cast(crop, tf.float32), [size, size], antialias=True)
    return tf.image.stateless_random_flip_left_right(crop, flip_seed)


def resize_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / RESIZE_RATIO) / tf.reduce_min(shape)
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.cast(tf.round(shape * scale), tf.int32), antialias=True)
    return tf.image.resize_with_crop_or_pad(resized, size, size)


# What `train_dataset(extras=...)` can add to each batch, after (images, labels), in the order asked:
# "indices", the images' positions in the training set (CRD); "strong_view", a second view of the same images,
# independently cropped and flipped and then RandAugment-ed (MLKD, `rand_augment.py`).
BATCH_EXTRAS = ("indices", "strong_view")


def check_extras(extras) -> tuple[str, ...]:
    extras = tuple(extras)
    unknown = [e for e in extras if e not in BATCH_EXTRAS]
    if unknown:
        raise ValueError(f"train_dataset: unknown extras {unknown}; the data can add {list(BATCH_EXTRAS)}")
    return extras


def extra_values(extras: tuple[str, ...], positions: tf.Tensor, strong_view) -> tuple[tf.Tensor, ...]:
    """The values `extras` names, in its order; `strong_view()` runs only when asked (RandAugment costs)."""
    return tuple(positions if name == "indices" else strong_view() for name in extras)


def _strong_seeds(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The strong view's own seeds, apart from the weak view's `seed` (which stays as it was)."""
    folded = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 1)
    crop_seed, ops_seed = tf.unstack(tf.random.experimental.stateless_split(folded, 2))
    return crop_seed, ops_seed


def _as_pixels(images: tf.Tensor) -> tf.Tensor:
    return tf.round(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0))


def strong_view_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A batch's strong view: its own flip, pad and crop, then RandAugment (float32, 8-bit values)."""
    from iep.datasets.rand_augment import rand_augment

    crop_seed, ops_seed = _strong_seeds(seed)
    return rand_augment(_as_pixels(flip_pad_crop_batch(images, crop_seed)), ops_seed)


def strong_view_one(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """One large image's strong view: its own random-resized crop and flip, then RandAugment."""
    from iep.datasets.rand_augment import rand_augment

    crop_seed, ops_seed = _strong_seeds(seed)
    return rand_augment(_as_pixels(random_resized_crop(image, size, crop_seed))[None], ops_seed)[0]
