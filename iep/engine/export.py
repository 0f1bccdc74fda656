"""SavedModel export of a trained classifier that serves without this project installed.

Signature `serving_default` (also callable as `.serve`):
  input  `images`: float32 [batch, H, W, 3], RGB pixels in [0, 255]
         (the network standardizes internally with the training statistics);
         another H, W or channel count is refused (InvalidArgumentError naming both shapes);
  output `logits`: float32 [batch, classes] and `probabilities` (softmax).
Class names: `assets/class_names.txt` inside the export, line i = class i.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

EXPORT_SUBDIR = "export"
CLASS_NAMES_FILE = "class_names.txt"


def export_classifier(classifier: keras.Model, export_dir: str, class_names: tuple[str, ...] = ()) -> str:
    height, width, channels = (int(d) for d in classifier.inputs[0].shape[1:])
    archive = keras.export.ExportArchive()
    archive.track(classifier)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="images")])
    def serve(images):
        # A signature call is not shape-checked by TensorFlow: enforce the declared shape at run time.
        images = tf.ensure_shape(images, [None, height, width, channels])
        logits = tf.cast(classifier(images, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive.add_endpoint("serve", serve)
    tmp_dir = export_dir.rstrip("/") + ".tmp"
    if tf.io.gfile.exists(tmp_dir):
        tf.io.gfile.rmtree(tmp_dir)
    try:
        archive.write_out(tmp_dir, verbose=False)
        if class_names:
            tf.io.gfile.makedirs(os.path.join(tmp_dir, "assets"))
            with tf.io.gfile.GFile(os.path.join(tmp_dir, "assets", CLASS_NAMES_FILE), "w") as f:
                f.write("\n".join(class_names) + "\n")
    except (tf.errors.OpError, OSError) as error:  # a full or read-only disk: one line, no half-written folder
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
        reason = error.message if isinstance(error, tf.errors.OpError) else (error.strerror or str(error))
        raise ValueError(f"cannot write the SavedModel {export_dir} ({reason.splitlines()[0][:200]})") from None
    if tf.io.gfile.exists(export_dir):
        tf.io.gfile.rmtree(export_dir)
    os.replace(tmp_dir, export_dir)
    return export_dir
