"""FixMatch's RandAugment, the strong view of MLKD, in TensorFlow with Pillow's 8-bit arithmetic.

Reference: the MLKD code's `mdistiller/dataset/cifar100.py` (`augment_list`, `RandAugment(2, 10)`, `Cutout`,
`get_cifar100_train_transform_strong`; the file of the authors' repository as its fork
`peanutshu11/Multi-Level-Logit-Distillation` carries it): per image, two operations drawn with replacement
from fourteen, each at a magnitude uniform in its range, then a cutout of side U(0, 0.5)·width filled with
(125, 123, 114). Each operation reproduces the Pillow function the reference calls (`ImageOps`,
`ImageEnhance`, `Image.transform` with NEAREST, `Image.rotate`), including its integer rounding, so
tests/test_rand_augment.py compares each one with Pillow itself, pixel for pixel.

Batched and stateless: every image draws its operations, magnitudes and cutout from the seed, so an epoch's
strong views are a pure function of (seed, epoch, batch), as the weak ones are (`augment.py`).
"""

from __future__ import annotations

import math

import tensorflow as tf

CUTOUT_FILL = (125.0, 123.0, 114.0)
# (name, low, high): `augment_list()` of the reference, in its order.
OPS = (
    ("auto_contrast", 0.0, 1.0),
    ("brightness", 0.05, 0.95),
    ("color", 0.05, 0.95),
    ("contrast", 0.05, 0.95),
    ("equalize", 0.0, 1.0),
    ("identity", 0.0, 1.0),
    ("posterize", 4.0, 8.0),
    ("rotate", -30.0, 30.0),
    ("sharpness", 0.05, 0.95),
    ("shear_x", -0.3, 0.3),
    ("shear_y", -0.3, 0.3),
    ("solarize", 0.0, 256.0),
    ("translate_x", -0.3, 0.3),
    ("translate_y", -0.3, 0.3),
)
NUM_OPS = 2  # RandAugment(2, 10): the magnitude 10 is unused there (values are drawn uniformly)


def _per_image(values: tf.Tensor) -> tf.Tensor:
    return tf.reshape(values, [-1, 1, 1, 1])


def _blend(degenerate: tf.Tensor, images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """`Image.blend(degenerate, image, factor)` (ImageEnhance): clipped, then truncated to 8 bits."""
    return tf.floor(tf.clip_by_value(degenerate + _per_image(factor) * (images - degenerate), 0.0, 255.0))


def _grayscale(images: tf.Tensor) -> tf.Tensor:
    """`convert("L")`: (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16, [B, H, W, 1]."""
    weights = tf.constant([19595.0, 38470.0, 7471.0])
    return tf.floor((tf.reduce_sum(images * weights, axis=-1, keepdims=True) + 32768.0) / 65536.0)


def _lut(images: tf.Tensor, table: tf.Tensor) -> tf.Tensor:
    """Per image and channel lookup tables [B, C, 256] applied to the pixels."""
    index = tf.cast(tf.transpose(images, [0, 3, 1, 2]), tf.int32)  # [B, C, H, W]
    return tf.transpose(tf.gather(table, index, batch_dims=2), [0, 2, 3, 1])


def _histograms(images: tf.Tensor) -> tf.Tensor:
    """[B, C, 256] counts of each 8-bit value per image and channel."""
    batch, channels = tf.shape(images)[0], tf.shape(images)[3]
    values = tf.cast(tf.transpose(images, [0, 3, 1, 2]), tf.int32)
    plane = tf.range(batch * channels)[:, None]
    ids = tf.reshape(tf.reshape(values, [batch * channels, -1]) + 256 * plane, [-1])
    counts = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids, batch * channels * 256)
    return tf.reshape(counts, [batch, channels, 256])


def auto_contrast(images: tf.Tensor, _: tf.Tensor) -> tf.Tensor:
    """`ImageOps.autocontrast`: each channel's [lo, hi] stretched to [0, 255], lut entries truncated."""
    lo = tf.reduce_min(images, axis=[1, 2])[:, :, None]  # [B, C, 1]
    hi = tf.reduce_max(images, axis=[1, 2])[:, :, None]
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    ramp = tf.range(256, dtype=tf.float32)[None, None, :]
    table = tf.clip_by_value(tf.floor(ramp * scale - lo * scale), 0.0, 255.0)  # int(), then clipped
    table = tf.where(hi > lo, table, ramp + tf.zeros_like(table))
    return _lut(images, table)


def brightness(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    return _blend(tf.zeros_like(images), images, v)


def color(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    return _blend(tf.broadcast_to(_grayscale(images), tf.shape(images)), images, v)


def contrast(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """Blend with a flat image at the grayscale mean, `int(mean + 0.5)`."""
    mean = tf.floor(tf.reduce_mean(_grayscale(images), axis=[1, 2, 3], keepdims=True) + 0.5)
    return _blend(tf.broadcast_to(mean, tf.shape(images)), images, v)


def equalize(images: tf.Tensor, _: tf.Tensor) -> tf.Tensor:
    """`ImageOps.equalize`: step = (pixels − count of the last used value) // 255; lut[i] = (step // 2 + Σ_{j<i}
    h[j]) // step."""
    histogram = _histograms(images)
    total = tf.reduce_sum(histogram, axis=-1, keepdims=True)
    used = histogram > 0
    last_index = 255 - tf.argmax(tf.reverse(tf.cast(used, tf.int32), axis=[-1]), axis=-1, output_type=tf.int32)
    last = tf.gather(histogram, last_index[..., None], batch_dims=2)
    step = tf.floor((total - last) / 255.0)
    before = tf.cumsum(histogram, axis=-1, exclusive=True)
    table = tf.floor((tf.floor(step / 2.0) + before) / tf.maximum(step, 1.0))
    ramp = tf.range(256, dtype=tf.float32)[None, None, :] + tf.zeros_like(table)
    keep = (step <= 0.0) | (tf.reduce_sum(tf.cast(used, tf.float32), axis=-1, keepdims=True) <= 1.0)
    return _lut(images, tf.clip_by_value(tf.where(keep, ramp, table), 0.0, 255.0))


def identity(images: tf.Tensor, _: tf.Tensor) -> tf.Tensor:
    return images


def posterize(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """Keep the top int(v) bits."""
    drop = tf.pow(2.0, 8.0 - tf.maximum(tf.floor(v), 1.0))
    return tf.floor(images / _per_image(drop)) * _per_image(drop)


def _affine(images: tf.Tensor, matrix: tf.Tensor, fixed_point: bool) -> tf.Tensor:
    """`Image.transform(AFFINE, (a, b, c, d, e, f), NEAREST)`: output pixel (x, y) reads input
    (⌊a(x+½) + b(y+½) + c⌋, ⌊d(x+½) + e(y+½) + f⌋); outside the image, black. matrix: [B, 6].

    Pillow (`Geometry.c`) takes a pure shift/scale (b = d = 0: translations) in double precision
    (`ImagingScaleAffine`) and any other matrix (rotations, shears) in 16.16 fixed point (`affine_fixed`): each
    coefficient rounded to 1/65536 first, so a coordinate within 2⁻¹⁶ of a pixel edge falls as Pillow's does."""
    height, width = images.shape[1], images.shape[2]
    a, b, c, d, e, f = (tf.reshape(m, [-1, 1, 1]) for m in tf.unstack(tf.cast(matrix, tf.float64), axis=1))
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float64), tf.range(width, dtype=tf.float64), indexing="ij")
    if fixed_point:

        def fix(v):  # FIX(v) = FLOOR(v · 65536 + 0.5)
            return tf.cast(tf.floor(v * 65536.0 + 0.5), tf.int64)

        xs64, ys64 = tf.cast(xs, tf.int64), tf.cast(ys, tf.int64)
        xx = fix(c + a * 0.5 + b * 0.5) + xs64 * fix(a) + ys64 * fix(b)
        yy = fix(f + d * 0.5 + e * 0.5) + xs64 * fix(d) + ys64 * fix(e)
        col, row = tf.math.floordiv(xx, 65536), tf.math.floordiv(yy, 65536)  # xx >> 16
    else:
        col = tf.cast(tf.floor(a * (xs + 0.5) + b * (ys + 0.5) + c), tf.int64)
        row = tf.cast(tf.floor(d * (xs + 0.5) + e * (ys + 0.5) + f), tf.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    index = tf.stack([tf.clip_by_value(row, 0, height - 1), tf.clip_by_value(col, 0, width - 1)], axis=-1)
    picked = tf.gather_nd(images, tf.cast(index, tf.int32), batch_dims=1)
    return tf.where(inside[..., None], picked, 0.0)


def rotate(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """`Image.rotate(v)`: counter-clockwise by v degrees about the centre, NEAREST, black corners."""
    width, height = float(images.shape[2]), float(images.shape[1])
    angle = -tf.cast(v, tf.float64) * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return _affine(images, tf.stack([cos, sin, c, -sin, cos, f], axis=1), fixed_point=True)


def _sharpen_degenerate(images: tf.Tensor) -> tf.Tensor:
    """`filter(ImageFilter.SMOOTH)`: 3×3 kernel [1 1 1; 1 5 1; 1 1 1] / 13, rounded; the border kept."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, images.shape[3], 1])
    smooth = tf.floor(tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "SAME") + 0.5)
    height, width = images.shape[1], images.shape[2]
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    interior = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    return tf.where(interior[None, :, :, None], tf.clip_by_value(smooth, 0.0, 255.0), images)


def sharpness(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    return _blend(_sharpen_degenerate(images), images, v)


def shear_x(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    zeros, ones = tf.zeros_like(v), tf.ones_like(v)
    return _affine(images, tf.stack([ones, v, zeros, zeros, ones, zeros], axis=1), fixed_point=True)


def shear_y(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    zeros, ones = tf.zeros_like(v), tf.ones_like(v)
    return _affine(images, tf.stack([ones, zeros, zeros, v, ones, zeros], axis=1), fixed_point=True)


def solarize(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    return tf.where(images < _per_image(v), images, 255.0 - images)


def translate_x(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    zeros, ones = tf.zeros_like(v), tf.ones_like(v)
    return _affine(images, tf.stack([ones, zeros, v * images.shape[2], zeros, ones, zeros], axis=1), False)


def translate_y(images: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    zeros, ones = tf.zeros_like(v), tf.ones_like(v)
    return _affine(images, tf.stack([ones, zeros, zeros, zeros, ones, v * images.shape[1]], axis=1), False)


FUNCTIONS = {
    "auto_contrast": auto_contrast,
    "brightness": brightness,
    "color": color,
    "contrast": contrast,
    "equalize": equalize,
    "identity": identity,
    "posterize": posterize,
    "rotate": rotate,
    "sharpness": sharpness,
    "shear_x": shear_x,
    "shear_y": shear_y,
    "solarize": solarize,
    "translate_x": translate_x,
    "translate_y": translate_y,
}


def apply_op(images: tf.Tensor, op: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """Image i gets operation `op[i]` (an index into OPS) at magnitude `value[i]`."""
    out = images
    for index, (name, _, _) in enumerate(OPS):
        out = tf.where(_per_image(tf.equal(op, index)), FUNCTIONS[name](images, value), out)
    return out


def cutout(images: tf.Tensor, fraction: tf.Tensor, centre: tf.Tensor) -> tf.Tensor:
    """`Cutout(img, v)` → `CutoutAbs`: side s = v·width, top-left (int(max(0, x0 − s/2)), int(max(0, y0 − s/2)))
    for the centre (x0, y0), `ImageDraw.rectangle` (both ends included, coordinates truncated) up to
    min(size, start + s); v ≤ 0 leaves the image. centre: [B, 2] pixel coordinates."""
    height, width = images.shape[1], images.shape[2]
    side = fraction * width
    x0 = tf.floor(tf.maximum(0.0, centre[:, 0] - side / 2.0))
    y0 = tf.floor(tf.maximum(0.0, centre[:, 1] - side / 2.0))
    x1, y1 = tf.minimum(float(width), x0 + side), tf.minimum(float(height), y0 + side)
    cols = tf.range(width, dtype=tf.float32)[None, None, :]
    rows = tf.range(height, dtype=tf.float32)[None, :, None]
    box = (cols >= x0[:, None, None]) & (cols <= tf.floor(x1)[:, None, None])
    box &= (rows >= y0[:, None, None]) & (rows <= tf.floor(y1)[:, None, None])
    box &= (fraction > 0.0)[:, None, None]
    return tf.where(box[..., None], tf.constant(CUTOUT_FILL), images)


def rand_augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The strong view of a batch of 8-bit images ([B, H, W, 3], any dtype, values 0…255): NUM_OPS operations
    drawn with replacement, magnitudes uniform in their ranges, then the cutout. float32 out."""
    images = tf.cast(images, tf.float32)
    batch = tf.shape(images)[0]
    op_seed, value_seed, cut_seed, corner_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    ops = tf.random.stateless_uniform([NUM_OPS, batch], op_seed, maxval=len(OPS), dtype=tf.int32)
    unit = tf.random.stateless_uniform([NUM_OPS, batch], value_seed)
    low = tf.constant([o[1] for o in OPS])
    high = tf.constant([o[2] for o in OPS])
    for k in range(NUM_OPS):
        value = tf.gather(low, ops[k]) + (tf.gather(high, ops[k]) - tf.gather(low, ops[k])) * unit[k]
        images = apply_op(images, ops[k], value)
    fraction = tf.random.stateless_uniform([batch], cut_seed) * 0.5
    # `np.random.uniform(w)` is uniform(low=w, high=1.0): w − (w − 1)·U, in (1, w], as executed
    size = tf.constant([float(images.shape[2]), float(images.shape[1])])
    centre = size - (size - 1.0) * tf.random.stateless_uniform([batch, 2], corner_seed)
    return cutout(images, fraction, centre)
