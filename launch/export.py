"""Exports a trained run as a self-contained model (preprocessing included).

  python -m launch.export --model_dir=DIR --format=keras|saved_model|tflite [--output=PATH]
      [--checkpoint=best]

The artifact loads without this package (keras.saving.load_model, tf.saved_model.load,
the TFLite interpreter) and takes RGB pixels in [0, 255]; `<artifact>.labels.json`
beside it names the classes. Prints the artifact's path. A model_dir that is not a run
or has no such checkpoint: one line on stderr naming it, exit code 2.
"""

from __future__ import annotations

from absl import app, flags

from engine.eval.export import FORMATS, export
from launch import usage

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run directory.")
_FORMAT = flags.DEFINE_enum("format", "saved_model", FORMATS, "What to write.")
_OUTPUT = flags.DEFINE_string("output", None, "Artifact path (default: MODEL_DIR/export/...).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best",
                                  "best | latest | a step | a .weights.h5 file or checkpoint prefix.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _MODEL_DIR.value:
    raise app.UsageError("--model_dir is required")
  print(export(_MODEL_DIR.value, _FORMAT.value, _OUTPUT.value, _CHECKPOINT.value))


if __name__ == "__main__":
  usage.run(main, user_errors=(OSError, ValueError))
