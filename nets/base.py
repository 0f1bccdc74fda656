"""The network contract every KD method relies on: logits plus named sensing points.

A `TappedNetwork` is built from any functional Keras graph and the names (or output tensors) of the layers to
tap. Only public Keras API is used to walk the graph (`model.layers`, `layer.input`, `layer.output`), so a
Keras upgrade that changes its private tensor history cannot break it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class TapSpec:
    """One sensing point: the Keras layer that produces it and its per-sample shape (H, W, C)."""

    name: str
    shape: tuple[int, int, int]


def _producers(graph: keras.Model) -> dict[int, keras.layers.Layer]:
    """id(output tensor) → the layer that made it, for every single-output layer of `graph`."""
    out = {}
    for layer in graph.layers:
        try:
            tensor = layer.output
        except (AttributeError, ValueError):  # a layer called several times has no single output
            continue
        if isinstance(tensor, keras.KerasTensor):
            out[id(tensor)] = layer
    return out


def _is_relu(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU)):
        return True
    if isinstance(layer, keras.layers.Activation):  # Keras Applications write activations as Activation("relu")
        return keras.activations.serialize(layer.activation) in ("relu", "relu6", "leaky_relu")
    return False


def _views(layer: keras.layers.Layer, producers: dict[int, keras.layers.Layer]):
    """(tap, pre-activation, stage output, BN before the activation or None) of one tapped layer.

    Why the pre-activation: FitNet, AB and CO (as in the author's benchmarks) match features *before* the
    final ReLU, where the sign (the activation boundary) is visible. Why the stage output: AT's official
    code (attention-transfer `cifar.py`) reads the WRN group outputs, before any BN-ReLU, i.e. the tensor the
    BN before the tap normalizes (a pre-activation net's residual stream).
    """
    tap = layer.output
    if not _is_relu(layer):
        return tap, tap, tap, None
    preact = layer.input
    source = producers.get(id(preact))
    if isinstance(source, keras.layers.BatchNormalization):
        return tap, preact, source.input, source
    return tap, preact, preact, None


def _spatial(layer: keras.layers.Layer) -> tuple[int, int, int] | None:
    shape = getattr(layer, "output", None)
    shape = getattr(shape, "shape", None)
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        return None
    return tuple(int(d) for d in shape[1:])


def stage_output_layers(graph: keras.Model) -> list[str]:
    """The last layer of each spatial resolution: a generic guess at a CNN's stage outputs (what
    `--teacher_taps` defaults to for an outside network).

    Small inputs (≤ 64 px, CIFAR-style nets) count from the input's own resolution; larger ones from a
    quarter of it, past the stem (ImageNet nets: 56, 28, 14, 7 at 224 px, as ResNet's four stages).
    Padding layers are skipped (their odd sizes are no stage), and so is everything before the first layer with
    a kernel (a model's own pixel scaling is no feature map).
    """
    height = graph.inputs[0].shape[1]
    limit = None if height is None else (height if height <= 64 else height // 4)
    last: dict[tuple[int, int], str] = {}
    learned = False
    for layer in graph.layers:  # topological order
        learned = learned or any("kernel" in w.path for w in layer.weights)
        shape = _spatial(layer)
        if not learned or shape is None or isinstance(layer, (keras.layers.InputLayer, keras.layers.ZeroPadding2D)):
            continue
        if min(shape[:2]) > 1 and (limit is None or max(shape[:2]) <= limit):
            last[shape[:2]] = layer.name
    return list(last.values())


class TappedNetwork:
    """A Keras functional model whose output is `{"logits", "taps", "preact_taps", "stage_outputs"}`.

    Why two views of one set of layers: KD methods need the intermediate feature
    maps, but an exported classifier should not carry them. `model` returns
    both; `classifier` shares the same layers (and weights) and returns logits
    only.
    """

    def __init__(
        self,
        arch: str,
        inputs: keras.KerasTensor,
        logits: keras.KerasTensor,
        taps: Sequence[keras.KerasTensor | str],
        name: str,
        preprocess: Callable[[keras.KerasTensor], keras.KerasTensor] | None = None,
        input_shape: Sequence[int] | None = None,
        tap_names: Sequence[str] | None = None,
    ):
        """`taps`: output tensors of layers of the graph from `inputs` to `logits`, or those layers' names.

        `preprocess` (outside teachers) maps images of `input_shape` (what the student takes: raw pixels)
        to what the graph expects, e.g. a pretrained model's own resizing and pixel scaling.
        `tap_names` name taps that are no layer's single output (a SavedModel's named outputs); such a
        point has no separate pre-activation view.
        """
        self.arch = arch
        graph = keras.Model(inputs, [logits, *[t for t in taps if not isinstance(t, str)]])
        producers = _producers(graph)
        names, views = [], []
        for i, tap in enumerate(taps):
            layer = graph.get_layer(tap) if isinstance(tap, str) else producers.get(id(tap))
            if layer is None and tap_names is None:
                raise ValueError(f"{arch}: sensing point {i} is not the output of a layer of the network")
            names.append(tap_names[i] if tap_names is not None else layer.name)
            views.append(_views(layer, producers) if layer is not None else (tap, tap, tap, None))
        outputs = {
            "logits": logits,
            "taps": [v[0] for v in views],
            "preact_taps": [v[1] for v in views],
            "stage_outputs": [v[2] for v in views],
        }
        # The layer whose output is the logits, whatever its name (None if the logits are no layer's output,
        # e.g. a SavedModel's named output): feature methods leave it out of what their hints train.
        self.head: keras.layers.Layer | None = producers.get(id(logits))
        # The BatchNormalization layer right before each tap's activation (None if there is none): CO's margins.
        self.preact_batch_norms = tuple(v[3] for v in views)
        self.tap_specs: tuple[TapSpec, ...] = tuple(
            TapSpec(n, tuple(int(d) for d in view[0].shape[1:])) for n, view in zip(names, views, strict=True)
        )
        self._nested = preprocess is not None
        if preprocess is None:
            self.model = keras.Model(inputs, outputs, name=name)
            self._inputs, self._logits = inputs, logits
        else:  # the graph as one nested model behind the preprocessing
            extractor = keras.Model(inputs, outputs, name=f"{name}_graph")
            self._inputs = keras.Input(shape=tuple(input_shape), name="images")
            wrapped = extractor(preprocess(self._inputs))
            self.model = keras.Model(self._inputs, wrapped, name=name)
            self._logits = wrapped["logits"]

    @functools.cached_property
    def classifier(self) -> keras.Model:
        return keras.Model(self._inputs, self._logits, name=f"{self.model.name}_classifier")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self._inputs.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self._logits.shape[-1])

    @property
    def tap_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tap_specs)

    def retapped(self, taps: Sequence[str]) -> TappedNetwork:
        """The same network (shared layers and weights) read at other layers, named."""
        if self._nested:
            raise ValueError(f"{self.arch}: only a network built in one graph can be re-tapped")
        return TappedNetwork(self.arch, self._inputs, self._logits, list(taps), name=self.model.name)

    def __call__(self, images, training: bool = False) -> dict:
        """The outputs in float32 whatever the compute dtype (mixed precision): KD math stays in float32."""
        outputs = self.model(images, training=training)
        return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), outputs)


def check_tapped(network: object, role: str) -> None:
    """Refuses what is no `TappedNetwork` (a bare `keras.Model` has no sensing points for a method to read),
    naming the argument and the calls that make one, instead of an AttributeError deep inside."""
    if not isinstance(network, TappedNetwork):
        raise TypeError(
            f"{role} must be a TappedNetwork: iep.build_network(...) or iep.tap_model(your_keras_model); "
            f"got {type(network).__name__}"
        )


def image_shape_problem(student: TappedNetwork, image_shape: Sequence[int | None]) -> str | None:
    """Why `student` cannot read images of `image_shape` [H, W, C], or None. Checked before any step: Keras
    refuses another height deep in a traced step, and another channel count can even pass in silence (the
    standardization broadcasts one channel over three)."""
    expected = tuple(student.model.input_shape[1:])  # None: a size the student takes any value of
    got = tuple(image_shape)
    if len(got) != len(expected) or any(
        want is not None and have is not None and want != have for want, have in zip(expected, got, strict=True)
    ):
        return f"the student takes images {expected} [H, W, C], got {got}"
    return None
