"""Predicts labels for images with a trained run.

  python -m launch.predict --model_dir=DIR IMAGE_OR_FOLDER... [--output=preds.csv]
      [--detect_faces | --aligned] [--max_fit_zoom=Z] [--no_face=skip|as_is] [--flip_tta]
      [--checkpoint=best]
      [--batch_size=32] [--max_image_pixels=80000000]
  python -m launch.predict --model=EXPORTED_ARTIFACT [--runtime_precision=bfloat16] ...

With --model, an artifact written by launch.export (model.onnx, openvino/model.xml,
model.tflite, saved_model, model.keras) runs the predictions through its own runtime,
with the same image preparation and face alignment, so a deployed model can be checked
on one's own photos.

Prints one line per image (file, label, confidence). A file that cannot be read (empty,
truncated, not an image, or over --max_image_pixels by its header, which is checked
before decoding) gets an ERROR line naming why, the others are still predicted, and the
exit code is 1.

Faces are framed as in training, by default: an image of the training images' own size
(CelebA's aligned 178x218) is used as it is, any other photo is first aligned to CelebA's
crop framing (mtcnn from the `faces` extra, else OpenCV's Haar cascade), and a line
after its prediction says why the alignment may be off (several faces, a doubtful
detection, a face box far from training's, a face at the photo's edge). Where the aligned
crop would reach past a tight photo's edge, the face is enlarged until it fits, up to the
zoom-in the run trained with (--max_fit_zoom to change that; 1 repeats the edge pixels
instead). --detect_faces aligns every image, --aligned none. An image without a face gets
a NO_FACE line, which is a result, not a failure; --no_face=as_is predicts such a photo as
it is instead, with a WARNING line saying so (the detector misses some real faces: cut
off, turned, blurred). The run's flip test-time augmentation
applies (--noflip_tta to turn it off), so a validation image gets the numbers
launch.evaluate gives it.
A model_dir that is not a run or has no such checkpoint: one line on stderr, exit code 2.
"""

from __future__ import annotations

from absl import app, flags

from engine.config import MAX_IMAGE_PIXELS  # no TensorFlow: mistakes answer at once
from engine.eval import preflight
from launch import usage

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run directory.")
_MODEL = flags.DEFINE_string("model", None, "An exported artifact (launch.export) to run "
                             "instead of a training run.")
_RUNTIME_PRECISION = flags.DEFINE_enum("runtime_precision", "float32", ["float32", "bfloat16"],
                                       "With --model: the runtime's precision (bfloat16: "
                                       "OpenVINO only).")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the predictions to this .csv or .json.")
_DETECT_FACES = flags.DEFINE_bool(
    "detect_faces", None, "Align every image's largest face to CelebA's framing first "
    "(default: every image not already of the training images' size).")
_ALIGNED = flags.DEFINE_bool("aligned", False, "The images are already framed like the "
                             "training images: never detect faces (--nodetect_faces).")
_FLIP_TTA = flags.DEFINE_bool("flip_tta", None, "Average each image's logits with its "
                              "mirror's (default: as the run's evaluation does).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best",
                                  "best | latest | a step | a .weights.h5 file or checkpoint prefix.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per model call.")
_MAX_FIT_ZOOM = flags.DEFINE_float(
    "max_fit_zoom", None, "How far alignment may enlarge a face so that the crop stays inside "
    "a tight photo (default: as far as the run's training zoomed in; 1: never, the photo's "
    "edge pixels repeat).", lower_bound=1.0, upper_bound=4.0)
_NO_FACE = flags.DEFINE_enum(
    "no_face", "skip", ["skip", "as_is"], "A photo where alignment finds no face: skip (a "
    "NO_FACE line, no label) or as_is (predicted from the photo as it is, with a warning).")
_MAX_IMAGE_PIXELS = flags.DEFINE_integer(
    "max_image_pixels", MAX_IMAGE_PIXELS, "Larger images (width x height, read from the "
    "file's header) are refused before decoding.")


def main(argv: list[str]) -> int:
  inputs = tuple(argv[1:])
  if bool(_MODEL_DIR.value) == bool(_MODEL.value):
    raise app.UsageError("give --model_dir (a training run) or --model (an exported artifact)")
  if not inputs:
    raise app.UsageError("give one or more image files or folders")
  if _ALIGNED.value and _DETECT_FACES.value:
    raise app.UsageError("--aligned and --detect_faces contradict each other")
  preflight.check_prediction(_MODEL_DIR.value, _CHECKPOINT.value, _OUTPUT.value)
  from engine.eval.predict import PredictConfig, predict  # TensorFlow starts after the checks
  results = predict(PredictConfig(
      model_dir=_MODEL_DIR.value, inputs=inputs, checkpoint=_CHECKPOINT.value,
      batch_size=_BATCH_SIZE.value, output=_OUTPUT.value, flip_tta=_FLIP_TTA.value,
      detect_faces=False if _ALIGNED.value else _DETECT_FACES.value,
      max_image_pixels=_MAX_IMAGE_PIXELS.value, model=_MODEL.value,
      runtime_precision=_RUNTIME_PRECISION.value, max_fit_zoom=_MAX_FIT_ZOOM.value,
      no_face=_NO_FACE.value))
  for result in results:
    if result["status"] == "ok":
      print(f"{result['file']}\t{result['label']}\t{result['confidence']:.4f}")
      for warning in result.get("warnings", []):
        print(f"{result['file']}\tWARNING\t{warning}")
    else:
      print(f"{result['file']}\t{result['status'].upper()}\t{result['message']}")
  failed = sum(result["status"] == "error" for result in results)
  if failed:
    print(f"{failed} of {len(results)} files failed")
  return 1 if failed else 0


if __name__ == "__main__":
  usage.run(main, user_errors=(OSError, ValueError, ImportError))
