"""The network contract every KD method relies on: logits plus named sensing points."""

from __future__ import annotations

import dataclasses
import functools

import keras


@dataclasses.dataclass(frozen=True)
class TapSpec:
    """One sensing point: the Keras layer that produces it and its per-sample shape (H, W, C)."""

    name: str
    shape: tuple[int, int, int]


class TappedNetwork:
    """A Keras functional model whose output is `{"logits": ..., "taps": [...]}`.

    Why two views of one set of layers: KD methods need the intermediate feature
    maps, but an exported classifier should not carry them. `model` returns
    both; `classifier` shares the same layers (and weights) and returns logits
    only.
    """

    def __init__(
        self, arch: str, inputs: keras.KerasTensor, logits: keras.KerasTensor, taps: list[keras.KerasTensor], name: str
    ):
        self.arch = arch
        self.model = keras.Model(inputs, {"logits": logits, "taps": list(taps)}, name=name)
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
        return self.model(images, training=training)
