"""Predicts labels for images with a trained run.

  python -m launch.predict --model_dir=DIR IMAGE_OR_FOLDER... [--output=preds.csv]
      [--detect_faces] [--checkpoint=best] [--batch_size=32]

Prints one line per image (file, label, confidence); a file that cannot be read gets an
ERROR line and the others are still predicted; the exit code is 1 if any file failed.
With --detect_faces each photo is first aligned to CelebA's crop framing (mtcnn from
the `faces` extra, else OpenCV's Haar cascade); an image without a face gets a NO_FACE
line, which is a result, not a failure.
"""

from __future__ import annotations

from absl import app, flags

from engine.eval.predict import PredictConfig, predict

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run directory.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the predictions to this .csv or .json.")
_DETECT_FACES = flags.DEFINE_bool("detect_faces", False,
                                  "Detect and align the largest face to CelebA's framing first.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best",
                                  "best | latest | a .weights.h5 file or checkpoint prefix.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per model call.")


def main(argv: list[str]) -> int:
  inputs = tuple(argv[1:])
  if not _MODEL_DIR.value:
    raise app.UsageError("--model_dir is required")
  if not inputs:
    raise app.UsageError("give one or more image files or folders")
  results = predict(PredictConfig(
      model_dir=_MODEL_DIR.value, inputs=inputs, checkpoint=_CHECKPOINT.value,
      batch_size=_BATCH_SIZE.value, output=_OUTPUT.value, detect_faces=_DETECT_FACES.value))
  for result in results:
    if result["status"] == "ok":
      print(f"{result['file']}\t{result['label']}\t{result['confidence']:.4f}")
    else:
      print(f"{result['file']}\t{result['status'].upper()}\t{result['message']}")
  failed = sum(result["status"] == "error" for result in results)
  if failed:
    print(f"{failed} of {len(results)} files failed")
  return 1 if failed else 0


if __name__ == "__main__":
  app.run(main)
