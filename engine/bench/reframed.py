"""The validation faces framed as other collections frame faces, through `launch.predict`.

`launch.evaluate --framing` feeds re-framed faces straight to the model: what a user gets
who skips face detection. This benchmark writes the same re-framed faces as JPEG photos
(the moved crop window at the stored images' resolution, so a tight chip is a small photo
of a face and a loose frame a larger one) and runs `engine.eval.predict` on the folder
once per mode (`modes`): with its defaults (photos not of the training frame's size are
detected and aligned to CelebA's frame, a tight photo's face enlarged up to the run's training
zoom so the crop stays inside it), aligned without that enlargement (edge pixels repeated),
with detection off (the photos resized as they are), and, on request, with `no_face="as_is"`
(`fallback`: a photo the detector misses is predicted as it is). A face the detector misses
counts as wrong where predict gives it no label. Per framing it reports each pass's accuracy
and how many faces were aligned, missed, flagged with a framing warning or enlarged, so a user
sees what the default buys.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np
import tensorflow as tf

from engine.data import schema
from engine.data.manifest import read_manifest
from engine.data.pipeline import eval_records
from engine.eval import framing as framing_lib
from engine.eval.predict import NO_FACE_WARNING, PredictConfig, predict, run_class_names
from engine.run.restore import read_config
from engine.tasks import TASKS

# predict's settings per mode: its defaults; aligned without enlarging a face that falls off
# the photo (the edge pixels repeat: the default before fit zoom); no detection; the defaults
# with a missed face predicted as its photo is.
MODES = {"default": {}, "unzoomed": {"max_fit_zoom": 1.0}, "as_is": {"detect_faces": False},
         "fallback": {"no_face": "as_is"}}
DEFAULT_MODES = ("default", "unzoomed", "as_is")


@dataclasses.dataclass(frozen=True)
class ReframedConfig:
  """What to re-frame and score.

  Attributes:
    model_dir: a training run directory (its crop box and labels are used).
    data_dir: shards with the split; None: the run's own.
    split: the split whose faces are re-framed.
    framings: `engine.eval.framing` names ("standard" for the whole curve).
    work_dir: the re-framed JPEGs are written to WORK_DIR/FRAMING/ (kept, to look at).
    checkpoint: which weights predict loads.
    max_faces: the first N faces of the split (0: all).
    output_json: where to write the rows.
    modes: which of MODES to run predict in (each is a pass over every photo).
  """

  model_dir: str
  data_dir: str | None = None
  split: str = "validation"
  framings: tuple[str, ...] = ("clean", "tight_1.3", "loose_0.7")
  work_dir: str = "runs/reframed"
  checkpoint: str = "best"
  max_faces: int = 0
  output_json: str | None = None
  modes: tuple[str, ...] = DEFAULT_MODES

  def validate(self) -> "ReframedConfig":
    unknown = [m for m in self.modes if m not in MODES]
    if unknown or not self.modes:
      raise ValueError(f"modes must be some of {', '.join(MODES)}; got {list(self.modes)}")
    framing_lib.parse_framings(self.framings)  # an unknown name raises, naming the known ones
    return self


def write_reframed(config: ReframedConfig, framing: framing_lib.Framing
                   ) -> tuple[list[str], np.ndarray]:
  """Writes the split's faces re-framed as JPEGs (quality 95); returns (files, labels)."""
  experiment = read_config(config.model_dir)
  inputs = dataclasses.replace(experiment.input, data_dir=config.data_dir or
                               experiment.input.data_dir, split=config.split)
  manifest = read_manifest(inputs.data_dir)
  if config.split not in manifest["splits"]:
    raise ValueError(f"{inputs.data_dir}: no split {config.split!r}; has "
                     f"{sorted(manifest['splits'])}")
  task = TASKS.get(inputs.task)
  spec = {schema.IMAGE: tf.io.FixedLenFeature([], tf.string),
          **task.label_features(manifest, inputs.label_attribute)}
  label_fn = task.label_fn(manifest, inputs.label_attribute)

  def photo(serialized):
    features = tf.io.parse_single_example(serialized, spec)
    window = framing_lib.framed_window(features[schema.IMAGE], inputs.crop_box, framing)
    return tf.io.encode_jpeg(tf.cast(tf.clip_by_value(tf.round(window), 0, 255), tf.uint8),
                             quality=95), label_fn(features)

  records = eval_records(inputs, manifest)
  if config.max_faces:
    records = records.take(config.max_faces)
  out_dir = os.path.join(config.work_dir, framing.name)
  os.makedirs(out_dir, exist_ok=True)
  files, labels = [], []
  for i, (jpeg, label) in enumerate(records.map(photo).as_numpy_iterator()):
    path = os.path.join(out_dir, f"{i:05d}.jpg")
    with open(path + ".tmp", "wb") as f:
      f.write(jpeg)
    os.replace(path + ".tmp", path)
    files.append(path)
    labels.append(label)
  return files, np.stack(labels)


def score_predictions(results: list[dict], labels: np.ndarray, names: list[str], task) -> dict:
  """Accuracy of predict's results (per-class probabilities) against the labels; a missed
  face or an unreadable photo counts as wrong."""
  ok = np.array([r["status"] == "ok" for r in results])
  probs = np.array([[r["probabilities"][n] for n in names] if r["status"] == "ok"
                    else [np.nan] * len(names) for r in results], dtype=np.float64)
  correct = np.zeros(len(results), dtype=bool)
  correct[ok] = task.correct(labels[ok], probs[ok])
  known = task.known(labels)
  return {"accuracy": float(correct[known].mean()), "faces": int(known.sum()),
          "no_face": int(sum(r["status"] == "no_face" for r in results)),
          "errors": int(sum(r["status"] == "error" for r in results)),
          "aligned": int(sum(r.get("framing") == "aligned" for r in results)),
          "warned": int(sum(bool(r.get("warnings")) for r in results)),
          "zoomed": int(sum(r.get("face", {}).get("zoom", 1.0) > 1.0 for r in results)),
          "unfaced": int(sum(any(w.startswith(NO_FACE_WARNING) for w in r.get("warnings", []))
                             for r in results))}


def run_reframed(config: ReframedConfig) -> dict:
  config.validate()
  experiment = read_config(config.model_dir)
  task = TASKS.get(experiment.input.task)
  if task.output_kind == "multilabel":
    raise ValueError(f"task={task.name} has no single answer per face to score")
  names = run_class_names(experiment)
  rows = []
  for framing in framing_lib.parse_framings(config.framings):
    files, labels = write_reframed(config, framing)
    size = tf.io.extract_jpeg_shape(tf.io.read_file(files[0])).numpy()[:2].tolist()
    row = {"framing": framing.name, "photo_size_hw": size}
    for mode in config.modes:
      results = predict(PredictConfig(config.model_dir, (os.path.dirname(files[0]),),
                                      checkpoint=config.checkpoint, **MODES[mode]))
      row[mode] = score_predictions(results, labels, names, task)
      logging.info("%s, predict %s: %.2f%%", framing.name, mode, 100 * row[mode]["accuracy"])
    rows.append(row)
  report = {"model_dir": config.model_dir, "split": config.split,
            "checkpoint": config.checkpoint, "rows": rows,
            "markdown": markdown_table(rows, config.modes)}
  if config.output_json:
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2)
  return report


_HEADERS = {"default": ("predict, defaults (detect + align + fit)",
                        "aligned / no face / warned / enlarged"),
            "unzoomed": ("aligned, not enlarged (warned)",),
            "as_is": ("predict, as is (no detection)",),
            "fallback": ("predict, --no_face=as_is (photos without a detected face)",)}


def _cells(mode: str, scored: dict) -> list[str]:
  accuracy = f"{100 * scored['accuracy']:.2f}%"
  if mode == "default":
    return [accuracy, f"{scored['aligned']} / {scored['no_face']} / {scored['warned']} / "
                      f"{scored['zoomed']} of {scored['faces']}"]
  if mode == "fallback":
    return [f"{accuracy} ({scored['unfaced']})"]
  return [f"{accuracy} ({scored['warned']})" if mode == "unzoomed" else accuracy]


def markdown_table(rows: list[dict], modes: tuple[str, ...] = DEFAULT_MODES) -> str:
  headers = ["framing", "photo size (h x w)", *(h for m in modes for h in _HEADERS[m])]
  lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
  for r in rows:
    cells = [r["framing"], f"{r['photo_size_hw'][0]} x {r['photo_size_hw'][1]}",
             *(c for m in modes for c in _cells(m, r[m]))]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
