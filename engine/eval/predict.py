"""Predicting labels for image files with a trained run or an exported artifact.

Each image is prepared as the evaluation pipeline prepares a stored one (JPEGs decoded by
TensorFlow with the same settings, cut to the run's crop box, resized bilinearly to the
run's size, rounded to uint8 when the run fed uint8), and scored with the same flip
test-time augmentation as the run's evaluation, so a validation JPEG gets exactly the
numbers `launch.evaluate` gives it.

Faces are framed as training framed them. By default (`detect_faces=None`, auto) an image
of exactly the training images' stored size (CelebA's aligned 178x218) is taken as
already aligned; any other image is first detected and aligned to CelebA's framing
(`engine.eval.faces`), and the result says which (`framing`: as_is | aligned) and why the
alignment may be off (`warnings`: several faces, a low detector score, a face box far
from where training saw faces, a face at the photo's edge). A run trained on an image
folder (no alignment in training) takes every image as it is. `detect_faces=True` or
`False` forces either way. Where the aligned crop would reach past the photo's edge (a tight
face chip), the face is enlarged until the crop fits, up to the largest zoom-in the run
trained with (`faces.fit_zoom`; the result's `face.zoom`), instead of repeating the photo's
edge pixels into bands no training image had. An image where the detector finds no face is
a `no_face` result by default; `no_face="as_is"` predicts it from the photo as it is instead,
with a warning, for photos the detector misses but a person would call faces.

Batches have one static shape (the last one is padded), so one traced function serves
every batch. A file that cannot be read is an error entry naming it and why, and so is
an image whose header states more than `max_image_pixels` (never decoded); the others go on.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os

import numpy as np
import tensorflow as tf

from engine.data.decode import crop_and_resize_fn, static_crop_window
from engine.data.manifest import read_manifest
from engine.config import MAX_IMAGE_PIXELS, ExperimentConfig
from engine.eval import faces
from engine.eval.artifact import load_runner, read_metadata
from engine.eval.image_files import expand_inputs, load_image
from engine.eval.preflight import check_prediction_output
from engine.eval.inference import make_predict_fn
from engine.tasks import TASKS, Task
from engine.run.restore import load_model

NO_FACE_CHOICES = ("skip", "as_is")
NO_FACE_WARNING = "no face found"  # how the warning of a photo predicted without one starts


@dataclasses.dataclass(frozen=True)
class PredictConfig:
  """What to predict.

  Attributes:
    model_dir: a training run directory (None with `model`).
    inputs: image files and folders (a folder's images with schema.IMAGE_EXTENSIONS, sorted).
    checkpoint: "best", "latest", or a weights path (see engine.run.restore.load_model).
    batch_size: images per model call.
    output: a .csv or .json file to write the predictions to (None: only return them).
    detect_faces: detect and align the largest face to CelebA's framing first: None
      (auto) for images not already of the training frame's size, True for all, False
      for none.
    flip_tta: average each image's logits with its mirror's; None: as the run's
      evaluation does (its `eval_flip`, or the artifact's metadata).
    max_image_pixels: larger images (by their header) are an error entry, not decoded.
    model: an artifact written by `launch.export` (instead of model_dir): predictions run
      through its runtime (ONNX Runtime, OpenVINO, TFLite, ...), with the class names,
      image size and crop box of its metadata.
    runtime_precision: the artifact runtime's precision (float32; bfloat16 for OpenVINO).
    max_fit_zoom: how far alignment may enlarge a face to keep the crop inside the photo;
      None: as far as the run's training zoomed in (AugmentConfig.max_zoom_in), 1: never.
    no_face: where alignment finds no face: "skip" (a `no_face` result, no label) or
      "as_is" (predicted from the photo as it is, `framing` "as_is", with a warning).
  """

  model_dir: str | None
  inputs: tuple[str, ...]
  checkpoint: str = "best"
  batch_size: int = 32
  output: str | None = None
  detect_faces: bool | None = None
  flip_tta: bool | None = None
  max_image_pixels: int = MAX_IMAGE_PIXELS
  model: str | None = None
  runtime_precision: str = "float32"
  max_fit_zoom: float | None = None
  no_face: str = "skip"

  def validate(self) -> "PredictConfig":
    if bool(self.model_dir) == bool(self.model):
      raise ValueError("give either a training run (model_dir) or an exported model (model)")
    if not self.inputs:
      raise ValueError("no inputs: give image files or folders")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.max_fit_zoom is not None and not 1.0 <= self.max_fit_zoom <= 4.0:
      raise ValueError(f"max_fit_zoom must be in [1, 4], got {self.max_fit_zoom}")
    if self.no_face not in NO_FACE_CHOICES:
      raise ValueError(f"no_face must be one of {', '.join(NO_FACE_CHOICES)}, got "
                       f"{self.no_face!r}")
    if self.max_image_pixels < 1:
      raise ValueError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")
    check_prediction_output(self.output)
    return self


def _read_manifest_or_none(data_dir: str) -> dict | None:
  try:
    return read_manifest(data_dir)
  except (OSError, ValueError) as e:
    logging.warning("class names: cannot read the run's manifest (%s)", e)
    return None


def run_class_names(config: ExperimentConfig) -> list[str]:
  """Names of a run's classes (of its attributes, for multi-label), in output order.

  From the run's manifest when it is readable here; otherwise CelebA's naming for a
  binary attribute, and class indices for the rest.
  """
  task, attribute = TASKS.get(config.input.task), config.input.label_attribute
  manifest = _read_manifest_or_none(config.input.data_dir)
  expected = 2 if task.output_kind == "binary" else config.model.num_outputs
  if manifest is not None:
    names = task.class_names(manifest, attribute)
  elif task.uses_label_attribute:
    names = task.class_names({"source": "celeba", "attribute_names": [attribute]}, attribute)
  else:
    names = [str(i) for i in range(expected)]
  if len(names) != expected:
    logging.warning("class names: %d names for %d classes; using indices", len(names), expected)
    names = [str(i) for i in range(expected)]
  return names


def run_frame_size(config: ExperimentConfig) -> tuple[int, int] | None:
  """(height, width) of the aligned frame the run trained on; None: a folder set's images,
  taken as they came (training aligned nothing)."""
  manifest = _read_manifest_or_none(config.input.data_dir)
  if manifest is None:
    logging.warning("face alignment: the run's manifest is not readable here; assuming "
                    "CelebA's aligned %dx%d frame", *faces.CELEBA_CROP_SIZE)
    return faces.CELEBA_CROP_SIZE
  if manifest["source"] != "celeba":
    return None
  shape = manifest.get("image_shape")
  return tuple(shape[:2]) if shape else faces.CELEBA_CROP_SIZE


def _model_fn(model, batch_size: int, image_size: tuple[int, int], dtype, task: Task,
              flip_tta: bool):
  """One traced function: a fixed-shape batch of pixels -> the task's probabilities, from
  the logits evaluation computes (engine.eval.inference, flip TTA included)."""
  logits = make_predict_fn(model, flip_tta)

  @tf.function(input_signature=[tf.TensorSpec([batch_size, *image_size, 3], dtype)])
  def probabilities(images):
    return task.probabilities(logits(images))

  return probabilities


def _describe(probabilities: np.ndarray, names: list[str], task: Task) -> dict:
  """One image's probabilities -> label, confidence and per-class probabilities."""
  label, confidence = task.describe(probabilities, names)
  return {"label": label, "confidence": confidence,
          "probabilities": {n: float(p) for n, p in zip(names, probabilities)}}


class _Batcher:
  """Collects prepared images and runs full (padded) batches through the model."""

  def __init__(self, fn, batch_size: int, image_shape, dtype, on_result):
    self._fn, self._batch_size, self._on_result = fn, batch_size, on_result
    self._zeros = np.zeros(image_shape, dtype.as_numpy_dtype)
    self._images, self._keys = [], []

  def add(self, key, image: np.ndarray) -> None:
    self._images.append(image)
    self._keys.append(key)
    if len(self._images) == self._batch_size:
      self.flush()

  def flush(self) -> None:
    if not self._images:
      return
    padding = [self._zeros] * (self._batch_size - len(self._images))
    outputs = self._fn(tf.constant(np.stack(self._images + padding))).numpy()
    for key, output in zip(self._keys, outputs):
      self._on_result(key, output)
    self._images, self._keys = [], []


class _Framer:
  """Frames each image as training did: as it is, or aligned by a face detector that is
  built on first use (loading MTCNN takes seconds), and counts what it did."""

  def __init__(self, detect_faces: bool | None, frame_size: tuple[int, int] | None,
               crop_box: tuple[float, ...] | None = None, max_zoom: float = 1.0,
               zoom_source: str = "max_fit_zoom", no_face: str = "skip"):
    self._detect, self._frame_size, self._detector = detect_faces, frame_size, None
    self._max_zoom, self._zoom_source, self._no_face = max_zoom, zoom_source, no_face
    # the pixels of the aligned frame the model reads, cut as the input pipeline cuts them
    self._window = None if crop_box is None else static_crop_window(faces.CELEBA_CROP_SIZE,
                                                                    crop_box)
    self.counts = {"as_is": 0, "aligned": 0, "no_face": 0, "warned": 0, "zoomed": 0,
                   "no_face_as_is": 0}

  def describe(self) -> str:
    if self._detect is None:
      mode = ("auto: images of the training frame's size "
              f"({self._frame_size[1]}x{self._frame_size[0]}) as they are, others aligned"
              if self._frame_size else "auto: the run trained on images as they came "
              "(no alignment); --detect_faces to align")
    else:
      mode = "on (every image aligned)" if self._detect else "off (--aligned)"
    if self._detect is False or (self._detect is None and not self._frame_size):
      return f"face alignment {mode}"
    fit = (f"a crop past the photo's edge is fitted by enlarging the face up to "
           f"{self._max_zoom:.2f}x ({self._zoom_source})" if self._max_zoom > 1.0 else
           f"a crop past the photo's edge repeats its edge pixels ({self._zoom_source})")
    missed = ("a photo without a detected face is predicted as it is, with a warning "
              "(no_face=as_is)" if self._no_face == "as_is" else
              "a photo without a detected face gets no label")
    return f"face alignment {mode}; {fit}; {missed}"

  def needs_detection(self, image: np.ndarray) -> bool:
    if self._detect is not None:
      return self._detect
    return self._frame_size is not None and tuple(image.shape[:2]) != tuple(self._frame_size)

  def frame(self, path: str, image: np.ndarray) -> tuple[np.ndarray | None, dict]:
    if not self.needs_detection(image):
      self.counts["as_is"] += 1
      return image, {"framing": "as_is"}
    if self._detector is None:
      self._detector = faces.make_detector()
    face = faces.align_face(image, self._detector, self._window, self._max_zoom)
    if face.status != "ok" and self._no_face == "as_is":
      self.counts["as_is"] += 1
      self.counts["no_face_as_is"] += 1
      warning = f"{NO_FACE_WARNING} ({face.detector}): predicted from the photo as it is"
      logging.warning("%s: %s", path, warning)
      return image, {"framing": "as_is", "warnings": [warning]}
    if face.status != "ok":
      self.counts["no_face"] += 1
      return None, {"status": "no_face", "framing": "aligned",
                    "message": f"{path}: no face found ({face.detector})"}
    warnings = faces.framing_warnings(face)
    self.counts["aligned"] += 1
    self.counts["warned"] += bool(warnings)
    self.counts["zoomed"] += face.zoom > 1.0
    for warning in warnings:
      logging.warning("%s: %s", path, warning)
    return face.image, {"framing": "aligned", "warnings": warnings,
                        "face": {"detector": face.detector, "num_faces": face.num_faces,
                                 "box": [round(v, 1) for v in face.detection.box],
                                 "score": face.detection.score,
                                 "box_in_frame": list(face.box_in_frame),
                                 "coverage": face.coverage, "zoom": face.zoom}}


def _read_and_frame(path: str, framer: _Framer, max_pixels: int
                    ) -> tuple[np.ndarray | None, dict]:
  """One file -> (RGB image to resize, or None; fields for its result)."""
  try:
    image = load_image(path, max_pixels)
  except (OSError, ValueError) as e:
    message = str(e) if path in str(e) else f"{path}: {e}"
    logging.warning("%s", message)
    return None, {"status": "error", "message": message}
  return framer.frame(path, image)


@dataclasses.dataclass(frozen=True)
class _Model:
  """What predict needs of a model: its batch function and how to feed and read it."""

  probabilities: object  # a fixed-shape batch of pixels -> the task's probabilities
  task: Task
  class_names: list[str]
  image_size: tuple[int, int]
  input_dtype: str
  crop_box: tuple[float, ...] | None
  frame_size: tuple[int, int] | None  # the aligned frame trained on (None: not aligned)
  flip_tta: bool
  max_zoom_in: float  # the largest face enlargement training showed (1.0: none)


def _run_model(model_dir: str, checkpoint: str, batch_size: int, flip_tta: bool | None
               ) -> _Model:
  """A training run's checkpoint, in TensorFlow."""
  model, run, source = load_model(model_dir, checkpoint)
  logging.info("weights: %s (step %s%s)", source.path, source.step, ", EMA" if source.ema else "")
  task, image_size = TASKS.get(run.input.task), tuple(run.input.image_size)
  dtype = tf.uint8 if run.input.output_dtype == "uint8" else tf.float32
  flip = run.train.eval_flip if flip_tta is None else flip_tta
  return _Model(_model_fn(model, batch_size, image_size, dtype, task, flip), task,
                run_class_names(run), image_size, run.input.output_dtype, run.input.crop_box,
                run_frame_size(run), flip, run.input.augment.max_zoom_in)


def _artifact_model(path: str, precision: str, flip_tta: bool | None) -> _Model:
  """An exported artifact, through its own runtime, fed as its metadata says."""
  info = read_metadata(path)
  run = load_runner(path, info["format"], precision)
  task = TASKS.get(info["task"])
  logging.info("model: %s (%s, %s; checkpoint %s, step %s)", path, info["format"], precision,
               info.get("checkpoint_path"), info.get("checkpoint_step"))
  flip = info.get("flip_tta", False) if flip_tta is None else flip_tta

  def probabilities(images):
    pixels = images.numpy()
    logits = run(pixels)
    if flip:  # as make_predict_fn: the mean of the image's and its mirror's logits
      logits = 0.5 * (logits + run(np.ascontiguousarray(pixels[:, :, ::-1])))
    return task.probabilities(tf.constant(logits))

  crop_box = tuple(info["crop_box"]) if info.get("crop_box") else None
  if "frame_size" in info:
    frame_size = tuple(info["frame_size"]) if info["frame_size"] else None
  else:
    logging.warning("face alignment: %s's metadata predates frame_size; assuming CelebA's "
                    "aligned frame", path)
    frame_size = faces.CELEBA_CROP_SIZE
  # artifacts exported before max_zoom_in: alignment as it was then (edge pixels repeated)
  return _Model(probabilities, task, info["class_names"], tuple(info["image_size"]),
                info.get("input_dtype", "float32"), crop_box, frame_size, flip,
                info.get("max_zoom_in", 1.0))


def predict(config: PredictConfig) -> list[dict]:
  """Predicts every input image; returns one dict per file, in input order.

  Each dict has `file` and `status`: "ok" (with `label`, `confidence`, `probabilities`
  {class name: p}), "error" or "no_face" (with `message`). Read images have `framing`
  (as_is | aligned); aligned ones also carry `face` (detector, box, score, num_faces,
  box_in_frame, coverage, zoom) and `warnings` (empty when the face looks like training's).
  """
  config.validate()
  entries = expand_inputs(config.inputs)
  batch_size = max(1, min(config.batch_size, len(entries)))
  model = (_artifact_model(config.model, config.runtime_precision, config.flip_tta)
           if config.model else
           _run_model(config.model_dir, config.checkpoint, batch_size, config.flip_tta))
  task, names, image_size = model.task, model.class_names, model.image_size
  dtype = tf.uint8 if model.input_dtype == "uint8" else tf.float32
  resize = crop_and_resize_fn(image_size, model.input_dtype, model.crop_box)
  if config.max_fit_zoom is None:
    max_zoom, source = model.max_zoom_in, ("the run's training zoom" if model.max_zoom_in > 1.0
                                           else "the run trained with no zoom-in")
  else:
    max_zoom, source = config.max_fit_zoom, "max_fit_zoom"
  framer = _Framer(config.detect_faces, model.frame_size, model.crop_box, max_zoom, source,
                   config.no_face)
  logging.info("%s; flip TTA %s", framer.describe(), "on" if model.flip_tta else "off")
  results: list[dict] = [{"file": path, "status": None} for path, _ in entries]

  def on_result(index, probabilities):
    results[index].update(status="ok", **_describe(probabilities, names, task))

  batcher = _Batcher(model.probabilities, batch_size, (*image_size, 3), dtype, on_result)
  for index, (path, error) in enumerate(entries):
    if error is not None:
      logging.warning("%s", error)
      results[index].update(status="error", message=error)
      continue
    image, fields = _read_and_frame(path, framer, config.max_image_pixels)
    results[index].update(fields)
    if image is not None:
      batcher.add(index, resize(tf.constant(image)).numpy())
  batcher.flush()
  counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "error", "no_face")}
  logging.info("predicted %d images (%d errors, %d without a face); %d used as they were "
               "(%d of them without a detected face), %d aligned (%d with warnings, %d enlarged "
               "to fit the photo)", counts["ok"], counts["error"], counts["no_face"],
               framer.counts["as_is"], framer.counts["no_face_as_is"], framer.counts["aligned"],
               framer.counts["warned"], framer.counts["zoomed"])
  if config.output:
    write_predictions(results, names, config.output)
  return results


def write_predictions(results: list[dict], names: list[str], path: str) -> None:
  """Writes `results` as JSON (a list) or CSV (a column per class), by extension."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.lower().endswith(".json"):
    with open(path, "w") as f:
      json.dump(results, f, indent=2)
  else:
    columns = ["file", "status", "label", "confidence", *[f"p_{n}" for n in names], "framing",
               "zoom", "warnings", "message"]
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, columns, extrasaction="ignore")
      writer.writeheader()
      for result in results:
        probabilities = {f"p_{n}": p for n, p in result.get("probabilities", {}).items()}
        writer.writerow({**result, **probabilities, "zoom": result.get("face", {}).get("zoom"),
                         "warnings": "; ".join(result.get("warnings", []))})
  logging.info("wrote %d predictions to %s", len(results), path)
