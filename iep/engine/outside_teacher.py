"""Teachers trained elsewhere: a Keras model file, a SavedModel, a Keras Applications or KerasHub model.

Each becomes a frozen `TappedNetwork` that takes what the student takes (float32 RGB pixels in [0, 255] at
the data's size): the pretrained model's own input preprocessing (resizing to its resolution and its pixel
scaling) is a layer in front of it, so it reaches the teacher only. Its sensing points are layers named by
`--teacher_taps` (SavedModel: the named outputs of its serving endpoint), by default the stage outputs of
the network (KerasHub: its feature pyramid). Shape differences with the student's points are handled where
they always are, by the methods' adapters.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence

import keras
import tensorflow as tf

from iep.nets import TappedNetwork, checked_input_shape
from iep.nets.base import stage_output_layers

KERAS_PREFIX = "keras:"
KERASHUB_PREFIX = "kerashub:"
# Pixel scalings of pretrained models, from raw [0, 255] RGB. "auto": the model's own when it is known
# (Keras Applications: its module's preprocess_input; KerasHub: its image converter), else "raw".
PREPROCESS = ("auto", "raw", "unit", "symmetric", "caffe", "torch")
_IMAGENET_MODES = {"caffe": "caffe", "torch": "torch", "symmetric": "tf"}  # ours → imagenet_utils' names


def is_outside_teacher(path: str) -> bool:
    """A Keras model file, a SavedModel folder or a model name, as opposed to a run or checkpoint of ours."""
    return (
        path.startswith((KERAS_PREFIX, KERASHUB_PREFIX))
        or path.endswith(".keras")
        or os.path.isfile(os.path.join(path, "saved_model.pb"))
    )


@keras.saving.register_keras_serializable(package="iep")
class TeacherInput(keras.layers.Layer):
    """Raw [0, 255] RGB images → what a pretrained teacher expects: resized to `size` (when given and
    different) and scaled by `mode` (or by a Keras Applications module's own `preprocess_input`)."""

    def __init__(self, size: Sequence[int] | None = None, mode: str = "raw", application: str | None = None, **kw):
        super().__init__(**kw)
        if mode not in PREPROCESS[1:]:
            raise ValueError(f"preprocess={mode!r}: must be one of {PREPROCESS}")
        self.size = None if size is None else tuple(int(s) for s in size)
        self.mode, self.application = mode, application

    def call(self, images):
        x = tf.cast(images, tf.float32)
        if self.size is not None and tuple(x.shape[1:3]) != self.size:
            x = tf.image.resize(x, self.size, method="bilinear")
        if self.application:
            return getattr(keras.applications, self.application).preprocess_input(x)
        if self.mode in _IMAGENET_MODES:  # Keras's own ImageNet scalings (BGR mean / torch mean-std / [-1, 1])
            return keras.applications.imagenet_utils.preprocess_input(x, mode=_IMAGENET_MODES[self.mode])
        return x / 255.0 if self.mode == "unit" else x

    def get_config(self):
        return {**super().get_config(), "size": self.size, "mode": self.mode, "application": self.application}


def _fixed_size(model: keras.Model) -> tuple[int, int] | None:
    shape = model.inputs[0].shape
    return (int(shape[1]), int(shape[2])) if shape[1] is not None and shape[2] is not None else None


def _with_fixed_input(model: keras.Model, input_shape: Sequence[int]) -> keras.Model:
    """A copy of a functional model with a dynamic-size input, rebuilt at `input_shape` (same weights), so
    every layer has a static shape to tap."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, *input_shape]
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _logits_of(model: keras.Model, flag: str, spec: str):
    """The model's logits tensor: its single output (log-probabilities when its last layer is a softmax,
    which KD treats identically: a per-sample constant does not change a softmax)."""
    if len(model.outputs) != 1:
        raise ValueError(f"{flag}{spec!r} has {len(model.outputs)} outputs; a teacher needs one (its logits)")
    output = model.outputs[0]
    if len(output.shape) != 2:
        raise ValueError(f"{flag}{spec!r}: its output has shape {tuple(output.shape)}, expected (batch, classes)")
    last = model.layers[-1]
    if getattr(last, "activation", None) is not None and keras.activations.serialize(last.activation) == "softmax":
        return keras.layers.Lambda(lambda p: keras.ops.log(keras.ops.maximum(p, 1e-30)), name="log_probs")(output)
    return output


def _tap_names(taps: Sequence[str] | str | None) -> list[str] | None:
    """`taps` as a list of layer names: one name given alone is one tap, not its letters."""
    return [taps] if isinstance(taps, str) else (list(taps) if taps is not None else None)


def _taps_of(model: keras.Model, taps: Sequence[str] | None, flag: str, spec: str) -> list:
    """The named layers, checked against the model's, or by default its stage outputs."""
    if not taps:
        default = stage_output_layers(model)
        if not default:
            raise ValueError(f"{flag}{spec!r}: no 4-D feature maps found to tap; name them with taps=")
        return default
    names = [layer.name for layer in model.layers]
    unknown = [t for t in taps if t not in names]
    if unknown:
        raise ValueError(
            f"taps={unknown} are not layers of {flag}{spec!r}; its stage outputs are "
            f"{stage_output_layers(model)} "
            f'(all {len(names)} layer names: python -c "import keras; keras.saving.load_model(PATH).summary()")'
        )
    return list(taps)


def _from_keras_model(
    model: keras.Model,
    spec: str,
    input_shape: Sequence[int],
    taps: Sequence[str] | None,
    preprocess: TeacherInput,
    flag: str,
    name: str,
) -> TappedNetwork:
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or model.inputs is None:
        raise ValueError(f"{flag}{spec!r} is not a functional Keras model (subclassed models have no layers to tap)")
    if _fixed_size(model) is None:
        model = _with_fixed_input(model, input_shape)
    taps = _taps_of(model, taps, flag, spec)
    return TappedNetwork(
        spec,
        model.inputs[0],
        _logits_of(model, flag, spec),
        taps,
        name=name,
        preprocess=preprocess,
        input_shape=input_shape,
    )


def _application(name: str, flag: str) -> tuple[keras.Model, str]:
    """(ImageNet-pretrained Keras Applications model with logits, the module whose preprocess_input it
    expects); an offline first use is one line naming the file to put in the cache."""
    constructor = getattr(keras.applications, name, None)
    if not callable(constructor) or not name[:1].isupper():
        known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        raise ValueError(f"{flag}{KERAS_PREFIX + name!r}: not a Keras Applications model; known: {', '.join(known)}")
    module = constructor.__module__.rsplit(".", 1)[-1]  # keras.src.applications.resnet → keras.applications.resnet
    if not hasattr(getattr(keras.applications, module, None), "preprocess_input"):
        raise ValueError(f"{flag}{KERAS_PREFIX + name!r}: keras.applications.{module} has no preprocess_input")
    try:
        model = constructor(weights="imagenet", classifier_activation=None)
    except Exception as error:  # Keras raises a bare Exception for a failed download
        match = re.search(r"https?://\S+?(?=:\s|$)", str(error))
        if "fetch failure" not in str(error) or not match:
            raise
        cache = os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "models")
        raise ValueError(
            f"{flag}{KERAS_PREFIX + name!r}: the ImageNet weights could not be downloaded (offline?); put "
            f"{os.path.basename(match.group(0))} into {cache}/ (from {match.group(0)}) or run once with internet"
        ) from None
    return model, module


def _kerashub(preset: str, input_shape, taps, preprocess_mode: str, flag: str, name: str) -> TappedNetwork:
    """A KerasHub image classifier preset (a name, or a local preset folder): its backbone's feature pyramid
    as sensing points, its head as logits, its image converter as preprocessing."""
    try:
        import keras_hub
    except ImportError:
        raise ValueError(f"{flag}{KERASHUB_PREFIX + preset!r} needs KerasHub: pip install keras-hub") from None
    try:
        task = keras_hub.models.ImageClassifier.from_preset(preset)
    except Exception as error:
        cache = os.environ.get("KAGGLEHUB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kagglehub"))
        raise ValueError(
            f"{flag}{KERASHUB_PREFIX + preset!r}: the preset could not be loaded "
            f"({error.__class__.__name__}: {str(error).splitlines()[0][:160]}); offline, give a local preset "
            f"folder (kerashub:/path/to/preset) or fill the KaggleHub cache {cache}"
        ) from None
    backbone = task.backbone
    logits = task.output_dense(task.pooler(backbone.output))
    pyramid = getattr(backbone, "pyramid_outputs", None)
    taps = list(pyramid.values()) if pyramid and not taps else _taps_of(backbone, taps, flag, preset)
    converter = getattr(task.preprocessor, "image_converter", None) if task.preprocessor else None
    if preprocess_mode == "auto" and converter is not None:
        size = _fixed_size(backbone) or tuple(input_shape[:2])
        preprocess = keras.Sequential([keras.layers.Resizing(*size), converter], name=f"{name}_input")
    else:
        preprocess = TeacherInput(_fixed_size(backbone), "raw" if preprocess_mode == "auto" else preprocess_mode)
    return TappedNetwork(
        f"{KERASHUB_PREFIX}{preset}",
        backbone.inputs[0],
        logits,
        taps,
        name=name,
        preprocess=preprocess,
        input_shape=input_shape,
    )


def _saved_model(path: str, input_shape, taps, preprocess: TeacherInput, flag: str, name: str) -> TappedNetwork:
    """A SavedModel's graph has no layers to tap: its sensing points are the named outputs of its serving
    endpoint (export a model whose outputs are a dict {"logits": ..., "<point>": ...})."""
    reloaded = tf.saved_model.load(path)
    signatures = reloaded.signatures
    if preprocess.size is None and "serving_default" in signatures:  # resize to a fixed input size it declares
        specs = tf.nest.flatten(signatures["serving_default"].structured_input_signature)
        shape = next((s.shape for s in specs if len(s.shape) == 4), None)
        if shape is not None and shape[1] is not None and shape[2] is not None:
            preprocess.size = (int(shape[1]), int(shape[2]))
    # The endpoint is chosen on the object already loaded (each TFSMLayer tried would load the model again).
    endpoints = [e for e in ("serving_default", *signatures) if e in signatures]
    endpoint = "serve" if callable(getattr(reloaded, "serve", None)) else next(iter(endpoints), None)
    if endpoint is None:
        raise ValueError(f"{flag}{path!r}: the SavedModel has no callable endpoint (expected 'serve')")
    loaded = keras.layers.TFSMLayer(path, call_endpoint=endpoint, name=f"{name}_saved_model")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    outputs = loaded(preprocess(inputs))
    if not isinstance(outputs, dict):
        outputs = {"logits": outputs}
    two_d = [k for k, v in outputs.items() if len(v.shape) == 2]
    logits_key = "logits" if "logits" in outputs else (two_d[0] if len(two_d) == 1 else None)
    if logits_key is None:
        raise ValueError(f"{flag}{path!r}: none of its outputs {sorted(outputs)} is 'logits' (or the only 2-D one)")
    maps = [k for k, v in outputs.items() if len(v.shape) == 4]
    unknown = [t for t in taps or () if t not in outputs]
    if unknown:
        raise ValueError(f"taps={unknown} are not outputs of the SavedModel {path!r}; it has {sorted(maps)}")
    names = list(taps) if taps else sorted(maps)
    return TappedNetwork(
        f"saved_model:{os.path.basename(os.path.normpath(path))}",
        inputs,
        outputs[logits_key],
        [outputs[k] for k in names],
        name=name,
        tap_names=names,
    )


def load_outside_teacher(
    spec: str,
    input_shape: Sequence[int],
    taps: Sequence[str] | None = None,
    preprocess: str = "auto",
    flag: str = "teacher=",
    name: str = "teacher",
) -> TappedNetwork:
    """`spec`: `keras:<ApplicationName>`, `kerashub:<preset or folder>`, a `.keras` file or a SavedModel
    folder. Frozen, taking raw [0, 255] pixels of `input_shape`."""
    taps = _tap_names(taps)
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess={preprocess!r}: must be one of {PREPROCESS}")
    mode = "raw" if preprocess == "auto" else preprocess
    if spec.startswith(KERASHUB_PREFIX):
        teacher = _kerashub(spec[len(KERASHUB_PREFIX) :], input_shape, taps, preprocess, flag, name)
    elif spec.startswith(KERAS_PREFIX):
        model, module = _application(spec[len(KERAS_PREFIX) :], flag)
        application = module if preprocess == "auto" else None
        layer = TeacherInput(_fixed_size(model), mode, application, name=f"{name}_input")
        teacher = _from_keras_model(model, spec, input_shape, taps, layer, flag, name)
    elif spec.endswith(".keras"):
        if not os.path.isfile(spec):
            raise ValueError(f"{flag}{spec!r} does not exist")
        if not zipfile.is_zipfile(spec):  # Keras would say "File not found" of a file that is there
            raise ValueError(f"{flag}{spec!r} is not a .keras archive (not a zip file): damaged, or another format")
        try:
            model = keras.saving.load_model(spec, compile=False)
        except Exception as error:  # a damaged zip, unknown custom objects, ...
            first = str(error).splitlines()[0][:200] if str(error) else ""
            raise ValueError(f"{flag}{spec!r} could not be loaded ({error.__class__.__name__}: {first})") from None
        layer = TeacherInput(_fixed_size(model), mode, name=f"{name}_input")
        teacher = _from_keras_model(model, spec, input_shape, taps, layer, flag, name)
    else:
        teacher = _saved_model(spec, input_shape, taps, TeacherInput(None, mode, name=f"{name}_input"), flag, name)
    freeze(teacher.model)
    return teacher


def tap_model(
    model: keras.Model,
    taps: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    preprocess: str = "raw",
    name: str | None = None,
    trainable: bool = False,
) -> TappedNetwork:
    """Your own functional `keras.Model` (image → logits) as a network every method can read: tapped at the
    named layers (`taps`), or by default at its stage outputs (the last layer of each spatial resolution).

    `input_shape` (H, W, C) is what the loop feeds it, raw [0, 255] pixels; default: the model's own.
    `preprocess` maps those pixels to what the model expects (see --teacher_preprocess: raw, unit, symmetric,
    caffe, torch). A teacher is frozen; `trainable=True` keeps the weights trainable, for a student.
    """
    taps = _tap_names(taps)
    if preprocess not in PREPROCESS or preprocess == "auto":
        raise ValueError(f"tap_model: preprocess must be one of {[p for p in PREPROCESS if p != 'auto']}")
    if not isinstance(model, keras.Model):
        raise TypeError(f"tap_model: model must be a keras.Model, got {type(model).__name__}")
    name = name or model.name
    try:  # a subclassed model has no graph of layers to read intermediate outputs from
        functional = bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        functional = False
    if not functional:
        raise ValueError(
            f"tap_model: {name!r} is a subclassed (or unbuilt) keras.Model; tap_model reads its layers' outputs "
            "from a functional graph: build it as keras.Model(inputs, outputs) or keras.Sequential with an Input"
        )
    if input_shape is not None:
        input_shape = checked_input_shape(input_shape, "tap_model")
    if input_shape is None:
        shape = model.inputs[0].shape[1:] if getattr(model, "inputs", None) else None
        if shape is None or None in tuple(shape):
            raise ValueError(f"tap_model: {name!r} has no fixed input size; give input_shape=(H, W, C)")
        input_shape = tuple(int(d) for d in shape)
    layer = TeacherInput(_fixed_size(model), preprocess, name=f"{name}_input")
    network = _from_keras_model(model, name, input_shape, taps, layer, "tap_model: ", name)
    if trainable:
        network.model.trainable = True
    else:
        freeze(network.model)
    return network


def freeze(model: keras.Model) -> None:
    """`model.trainable = False`. Keras 3.6 cannot set it through a `TFSMLayer` (the SavedModel's
    restored variables have no `trainable` setter, AttributeError); there every layer's own flag is cleared,
    which empties `trainable_variables` just the same."""
    try:
        model.trainable = False
    except AttributeError:
        for layer in model._flatten_layers(include_self=True):
            layer._trainable = False
