"""The network contract every KD method relies on: logits plus named sensing points."""

from __future__ import annotations

import dataclasses
import functools

import keras
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class TapSpec:
    """One sensing point: the Keras layer that produces it and its per-sample shape (H, W, C)."""

    name: str
    shape: tuple[int, int, int]


def _pre_activation(tap: keras.KerasTensor):
    """(input of the ReLU-family layer that made `tap`, or `tap` itself; the BN layer feeding that input or None).

    Why: FitNet, AB and CO (as in the author's benchmarks) match features
    *before* the final ReLU, where the sign (the activation boundary) is visible.
    """
    layer = tap._keras_history.operation
    if not isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU)):
        return tap, None
    preact = layer.input
    source = preact._keras_history.operation
    return preact, source if isinstance(source, keras.layers.BatchNormalization) else None


def _stage_output(preact: keras.KerasTensor, batch_norm) -> keras.KerasTensor:
    """The tensor the BN before a tap normalizes (a pre-activation net's raw stage output, the residual
    stream), or `preact` where no BN feeds the tap's activation.

    Why: AT's official code (attention-transfer `cifar.py`) reads the WRN group outputs, before any BN-ReLU.
    """
    return batch_norm.input if batch_norm is not None else preact


class TappedNetwork:
    """A Keras functional model whose output is `{"logits", "taps", "preact_taps", "stage_outputs"}`.

    Why two views of one set of layers: KD methods need the intermediate feature
    maps, but an exported classifier should not carry them. `model` returns
    both; `classifier` shares the same layers (and weights) and returns logits
    only.
    """

    def __init__(
        self, arch: str, inputs: keras.KerasTensor, logits: keras.KerasTensor, taps: list[keras.KerasTensor], name: str
    ):
        self.arch = arch
        preact = [_pre_activation(t) for t in taps]
        self.model = keras.Model(
            inputs,
            {
                "logits": logits,
                "taps": list(taps),
                "preact_taps": [p for p, _ in preact],
                "stage_outputs": [_stage_output(p, bn) for p, bn in preact],
            },
            name=name,
        )
        # The BatchNormalization layer right before each tap's activation (None if there is none): CO's margins.
        self.preact_batch_norms = tuple(bn for _, bn in preact)
        self._inputs = inputs
        self._logits = logits
        self.tap_specs: tuple[TapSpec, ...] = tuple(
            TapSpec(t._keras_history.operation.name, tuple(int(d) for d in t.shape[1:])) for t in taps
        )

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

    def __call__(self, images, training: bool = False) -> dict:
        """The outputs in float32 whatever the compute dtype (mixed precision): KD math stays in float32."""
        outputs = self.model(images, training=training)
        return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), outputs)
