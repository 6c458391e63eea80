"""Exports a trained run as a self-contained model (preprocessing included).

  python -m launch.export --model_dir=DIR --format=keras|saved_model|tflite|onnx|openvino
      [--output=PATH] [--checkpoint=best] [--check_images=FILE_OR_FOLDER,...]

The artifact loads without this package (keras.saving.load_model, tf.saved_model.load,
the TFLite interpreter, onnxruntime, openvino) and takes RGB pixels in [0, 255];
`<artifact>.labels.json` beside it names the classes and says how to feed it. onnx and
openvino need the `deploy` extra. Before it is written, the artifact runs the first
validation images (or --check_images) through its runtime, in each precision it offers,
and must match the checkpoint's logits. Prints the artifact's path. A model_dir that is
not a run or has no such checkpoint, a missing converter, or an artifact that disagrees
with the checkpoint: one line on stderr naming it, exit code 2, nothing written.
"""

from __future__ import annotations

from absl import app, flags

from engine.eval import preflight  # no TensorFlow: mistakes answer at once
from engine.eval.artifact import FORMATS
from launch import usage

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run directory.")
_FORMAT = flags.DEFINE_enum("format", "saved_model", FORMATS, "What to write.")
_OUTPUT = flags.DEFINE_string("output", None, "Artifact path (default: MODEL_DIR/export/...).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best",
                                  "best | latest | a step | a .weights.h5 file or checkpoint prefix.")
_CHECK_IMAGES = flags.DEFINE_list("check_images", None,
                                  "Image files/folders to check the export on; default: the "
                                  "run's validation split.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _MODEL_DIR.value:
    raise app.UsageError("--model_dir is required")
  preflight.check_export(_MODEL_DIR.value, _CHECKPOINT.value, _FORMAT.value, _OUTPUT.value)
  from engine.eval.export import export  # TensorFlow starts after the checks
  print(export(_MODEL_DIR.value, _FORMAT.value, _OUTPUT.value, _CHECKPOINT.value,
               tuple(_CHECK_IMAGES.value) if _CHECK_IMAGES.value else None))


if __name__ == "__main__":
  usage.run(main, user_errors=(OSError, ValueError, ImportError))
