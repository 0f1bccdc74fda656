"""The strong view (MLKD): each RandAugment operation against Pillow itself, pixel for pixel, the cutout against
a transcription of the reference's `CutoutAbs`, and the data's strong views seeded and apart from the weak."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from iep.datasets import rand_augment as ra

RNG = np.random.default_rng(5)


def _images():
    """Noise, a low-contrast image, a four-level image (sparse histograms) and a flat one."""
    noise = RNG.integers(0, 256, (3, 32, 32, 3))
    low = RNG.integers(60, 120, (1, 32, 32, 3))
    levels = RNG.integers(0, 4, (1, 32, 32, 3)) * 40
    flat = np.full((1, 32, 32, 3), 77)
    return np.concatenate([noise, low, levels, flat]).astype(np.uint8)


PILLOW = {
    "auto_contrast": lambda im, v: ImageOps.autocontrast(im),
    "brightness": lambda im, v: ImageEnhance.Brightness(im).enhance(v),
    "color": lambda im, v: ImageEnhance.Color(im).enhance(v),
    "contrast": lambda im, v: ImageEnhance.Contrast(im).enhance(v),
    "equalize": lambda im, v: ImageOps.equalize(im),
    "identity": lambda im, v: im,
    "posterize": lambda im, v: ImageOps.posterize(im, max(1, int(v))),
    "rotate": lambda im, v: im.rotate(v),
    "sharpness": lambda im, v: ImageEnhance.Sharpness(im).enhance(v),
    "shear_x": lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0)),
    "shear_y": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0)),
    "solarize": lambda im, v: ImageOps.solarize(im, v),
    "translate_x": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, v * im.size[0], 0, 1, 0)),
    "translate_y": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v * im.size[1])),
}


@pytest.mark.parametrize("name, low, high", ra.OPS)
def test_each_operation_is_pillows(name, low, high):
    images = _images()
    values = (low + (high - low) * RNG.random(len(images))).astype(np.float32)
    values[0], values[1] = low, high  # both ends of the range too
    got = ra.FUNCTIONS[name](tf.constant(images, tf.float32), tf.constant(values)).numpy()
    expected = np.stack(
        [np.asarray(PILLOW[name](Image.fromarray(im), float(v))) for im, v in zip(images, values, strict=True)]
    )
    np.testing.assert_array_equal(got, expected)


def _np_cutout(image, fraction, centre):
    """The reference's `Cutout` → `CutoutAbs` with the centre given (it draws it with np.random.uniform(w))."""
    img = Image.fromarray(image)
    if fraction <= 0.0:
        return np.asarray(img)
    v = fraction * img.size[0]
    x0, y0 = int(max(0, centre[0] - v / 2.0)), int(max(0, centre[1] - v / 2.0))
    x1, y1 = min(img.size[0], x0 + v), min(img.size[1], y0 + v)
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (125, 123, 114))
    return np.asarray(img)


def test_the_cutout_is_the_references():
    images = _images()
    fractions = np.array([0.0, 0.5, 0.13, 0.31, 0.49, 0.07], np.float32)
    centres = np.array([[5, 5], [32, 32], [1.2, 30.7], [16.5, 3.3], [31.9, 1.01], [10.6, 20.2]], np.float32)
    got = ra.cutout(tf.constant(images, tf.float32), tf.constant(fractions), tf.constant(centres)).numpy()
    expected = np.stack([_np_cutout(im, f, c) for im, f, c in zip(images, fractions, centres, strict=True)])
    np.testing.assert_array_equal(got, expected)


def test_rand_augment_is_seeded_and_stays_8_bit():
    images = tf.constant(_images(), tf.float32)
    a = ra.rand_augment(images, tf.constant([1, 2], tf.int64)).numpy()
    b = ra.rand_augment(images, tf.constant([1, 2], tf.int64)).numpy()
    c = ra.rand_augment(images, tf.constant([1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 255 and np.array_equal(a, np.round(a))


def test_the_strong_view_leaves_the_weak_one_as_it_was(cifar10_subset):
    """`extras=("strong_view",)` adds a view; the weak images and labels are those of a plain epoch."""
    plain = list(cifar10_subset.train_dataset(3, 100, 7).take(2))
    both = list(cifar10_subset.train_dataset(3, 100, 7, extras=("strong_view",)).take(2))
    again = list(cifar10_subset.train_dataset(3, 100, 7, extras=("strong_view",)).take(2))
    for (x, y), (x2, y2, strong), (_, _, strong2) in zip(plain, both, again, strict=True):
        np.testing.assert_array_equal(x.numpy(), x2.numpy())
        np.testing.assert_array_equal(y.numpy(), y2.numpy())
        np.testing.assert_array_equal(strong.numpy(), strong2.numpy())
        assert strong.shape == x.shape and strong.dtype == tf.float32
        assert np.mean(strong.numpy() != x.numpy()) > 0.5


def test_unknown_extras_are_refused(cifar10_subset):
    with pytest.raises(ValueError, match=r"unknown extras \['mixup'\]; the data can add \['indices', 'strong_view'\]"):
        cifar10_subset.train_dataset(0, 100, 0, extras=("mixup",))
