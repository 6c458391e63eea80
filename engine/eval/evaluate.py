"""Evaluation of a trained run on one split: metrics, slices, confusion matrix, report.

`evaluate(EvalConfig(model_dir, data_dir, split))` restores the run's model, predicts
every example of the split exactly once (the eval pipeline pads the last batch and masks
the padding), and writes into `model_dir/eval_<split>/`: `confusion_matrix.png` and
TensorBoard scalars + image. With CelebA shards it also re-reads each example's other
attributes and identity (same files, same order, no image decode) to report the error in
slices: e.g. the gender error on faces with and without eyeglasses, ranked by the gap to
the overall error with 95% Wilson intervals (`engine.eval.fairness`), in the console, the
JSON ("fairness") and TensorBoard (scalars and a text table).

With `framings` it also scores the split re-framed the way other collections frame faces
(`engine.eval.framing`: tighter chips, looser frames, shifts, tilts): the robustness curve,
each point's accuracy and its drop from the clean framing ("framing" in the JSON).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import cv2
import numpy as np
import tensorflow as tf

from engine.config import InputConfig
from engine.data import integrity, schema
from engine.data.manifest import read_split_manifest
from engine.data.pipeline import eval_records, make_dataset
from engine.eval import fairness, framing, metrics
from engine.eval.inference import make_predict_fn, predict_padded
from engine.run.restore import is_best_weights, load_model
from engine.tasks import TASKS, Task

# Identity-size buckets (examples of that identity in the split): [1], [2, 3], [4, 7], ...
_BUCKET_EDGES = (1, 2, 4, 8, 16, 32, 64)
_BUCKET_NAMES = [f"{lo}-{hi - 1}" if hi - 1 > lo else str(lo)
                 for lo, hi in zip(_BUCKET_EDGES, _BUCKET_EDGES[1:])] + [f"{_BUCKET_EDGES[-1]}+"]
# Per-class rows and by-class slices are listed for at most this many classes.
MAX_LISTED_CLASSES = 30


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What to evaluate.

  Attributes:
    model_dir: a training run directory (config.json + weights).
    data_dir: the shard directory; None uses the run's own `config.input.data_dir`.
    split: the manifest split to evaluate.
    checkpoint: best | latest | a .weights.h5 path | a tf.train checkpoint prefix.
    batch_size: examples per predict step (the last batch is padded, never dropped).
    output_json: where to write every number as JSON (None: not written).
    flip_tta: average the logits of each image and its mirror image; None: as the run
      was evaluated during training (its `eval_flip`).
    on_bad_record: "error" stops at an unreadable record, naming its shard; "skip" evaluates
      what reads and says how many of the manifest's examples were left out.
    verify_shards: check the shards against manifest.json first: fast | full | off.
    framings: also score these framings (`engine.eval.framing` names, "standard" for the
      whole curve); single-answer tasks only.
    ensemble: more run directories whose models (same checkpoint name) are averaged with
      model_dir's, logits averaged as flip TTA averages them; every member must read the
      same input (task, label, image size, crop, dtype).
  """

  model_dir: str
  data_dir: str | None = None
  split: str = "test"
  checkpoint: str = "best"
  batch_size: int = 64
  output_json: str | None = None
  flip_tta: bool | None = None
  on_bad_record: str = "error"
  verify_shards: str = "fast"
  framings: tuple[str, ...] = ()
  ensemble: tuple[str, ...] = ()


# What every member of an ensemble must agree on: they are fed one decoded batch.
_SHARED_INPUT = ("task", "label_attribute", "image_size", "crop_box", "output_dtype")


def _ensemble_members(config: EvalConfig, experiment) -> tuple[list, list[dict]]:
  models, members = [], []
  for model_dir in config.ensemble:
    model, other, source = load_model(model_dir, config.checkpoint)
    for field in _SHARED_INPUT:
      mine, theirs = getattr(experiment.input, field), getattr(other.input, field)
      if mine != theirs:
        raise ValueError(f"ensemble: {model_dir} reads {field}={theirs!r}, {config.model_dir} "
                         f"reads {mine!r}; members must read the same input")
    models.append(model)
    members.append({"model_dir": model_dir, "checkpoint_path": source.path,
                    "checkpoint_step": source.step, "ema": source.ema})
  return models, members


def evaluate(config: EvalConfig) -> dict:
  """Evaluates the run, writes its artefacts, prints a report and returns all numbers."""
  if config.batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {config.batch_size}")
  model, experiment, source = load_model(config.model_dir, config.checkpoint)
  if config.flip_tta is None:
    config = dataclasses.replace(config, flip_tta=experiment.train.eval_flip)
  input_config = dataclasses.replace(
      experiment.input, data_dir=config.data_dir or experiment.input.data_dir,
      split=config.split, global_batch_size=config.batch_size, training=False,
      cache="none", balance="none", tf_data_service=None,  # one local pass
      on_bad_record=config.on_bad_record, verify_shards=config.verify_shards)
  manifest = read_split_manifest(input_config.data_dir, config.split)
  task = TASKS.get(input_config.task)
  framings = framing.parse_framings(config.framings)
  if framings and task.output_kind == "multilabel":
    raise ValueError(f"framings: task={task.name} has no single answer per example to score")
  integrity.check_shards(input_config.data_dir, manifest, [config.split], config.verify_shards)
  others, members = _ensemble_members(config, experiment)
  predict = make_predict_fn([model, *others], config.flip_tta)
  try:
    predictions = predict_padded(predict, make_dataset(input_config))
  except tf.errors.DataLossError as e:
    raise integrity.corrupt_record_error(input_config.data_dir, manifest, config.split, e) from e
  logits, labels = predictions.logits.astype(np.float64), predictions.labels
  expected = manifest["splits"][config.split]["num_examples"]
  skipped = expected - labels.shape[0]
  if skipped and config.on_bad_record != "skip":
    raise RuntimeError(f"{input_config.data_dir}/{config.split}: predicted {labels.shape[0]} "
                       f"examples, the manifest lists {expected}")
  if skipped:
    logging.warning("%s/%s: %d of the manifest's %d examples were unreadable and skipped; "
                    "every number below is on the other %d", input_config.data_dir,
                    config.split, skipped, expected, labels.shape[0])

  _check_alignment(input_config, manifest, task, labels)
  side = _read_side_features(input_config, manifest)
  report = {
      "model_dir": config.model_dir, "data_dir": input_config.data_dir, "split": config.split,
      "checkpoint": config.checkpoint, "checkpoint_path": source.path,
      "checkpoint_step": source.step, "ema": source.ema, "flip_tta": config.flip_tta,
      "selection": checkpoint_selection(config.model_dir, experiment, source.path, config.split),
      "ensemble": members,
      "task": input_config.task,
      "label_attribute": (input_config.label_attribute if task.uses_label_attribute
                          and manifest["source"] == "celeba" else None),
      "num_examples": int(labels.shape[0]),
      "manifest_examples": int(expected), "skipped_examples": int(skipped),
  }
  report.update(_task_report(task, logits, labels, input_config, manifest, side))
  if framings:
    report["framing"] = _framing_curve(predict, task, input_config, manifest, framings)

  # an ensemble's artefacts do not replace the run's own
  out_dir = os.path.join(config.model_dir, f"eval_{config.split}"
                         + (f"_ensemble{1 + len(members)}" if members else ""))
  os.makedirs(out_dir, exist_ok=True)
  image = _write_confusion_matrix(report, out_dir)
  _write_summaries(report, image, out_dir, source.step)
  if config.output_json:
    os.makedirs(os.path.dirname(os.path.abspath(config.output_json)), exist_ok=True)
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2, allow_nan=False)
    logging.info("wrote %s", config.output_json)
  print(format_report(report))  # the console report is this function's product
  return report


def checkpoint_selection(model_dir: str, experiment, weights_path: str,
                         split: str) -> dict | None:
  """How the weights were chosen, when they are the run's best checkpoint; None otherwise.

  The trainer keeps as "best" the weights with the best `monitor` on its `eval_split`. Scored
  on that same split (`on_scored_split`), the figure took part in choosing them and leans
  optimistic; the run's final weights ("latest") or another split involve no such choice.
  Splits are matched by name: a re-sharded copy of the same faces (e.g. with more attributes)
  keeps its split's name.
  """
  if not is_best_weights(model_dir, weights_path):
    return None
  return {"monitor": experiment.train.monitor, "split": experiment.eval_split,
          "data_dir": experiment.input.data_dir, "on_scored_split": split == experiment.eval_split}


def _framing_curve(predict, task: Task, config: InputConfig, manifest: dict,
                   framings: tuple[framing.Framing, ...]) -> list[dict]:
  """Accuracy under each framing; the drop is from the "clean" point of the same path."""
  rows = []
  clean = None
  for f in sorted(framings, key=lambda f: f.name != "clean"):  # clean first: the reference
    predictions = predict_padded(predict, framing.framed_dataset(config, manifest, task, f))
    probs = task.probabilities(predictions.logits.astype(np.float64)).numpy()
    rows.append(framing.framing_row(f, task, predictions.labels, probs, clean))
    clean = rows[0]["accuracy"] if rows[0]["name"] == "clean" else None
    logging.info("framing %s: accuracy %.4f", f.name, rows[-1]["accuracy"])
  return rows


def _read_side_features(config: InputConfig, manifest: dict) -> dict[str, np.ndarray]:
  """Every attribute and the identity of each example, in the eval pipeline's order: the
  same records, with the same ones skipped, without decoding images."""
  if manifest["source"] != "celeba":
    return {}
  spec = {schema.flat_key(schema.ATTRIBUTES, n): tf.io.FixedLenFeature([], tf.int64)
          for n in manifest["attribute_names"]}
  if manifest.get("has_identity"):
    spec[schema.IDENTITY] = tf.io.FixedLenFeature([], tf.int64)
  ds = eval_records(config, manifest).batch(1024).map(lambda s: tf.io.parse_example(s, spec))
  chunks = list(ds.as_numpy_iterator())
  side = {}
  for key in spec:
    name = key.split("/", 1)[1] if key.startswith(schema.ATTRIBUTES + "/") else key
    side[name] = np.concatenate([c[key] for c in chunks]) if chunks else np.zeros([0], np.int64)
  return side


def _check_alignment(config: InputConfig, manifest: dict, task: Task,
                     labels: np.ndarray) -> None:
  """The records read back for the side features must be the eval pipeline's examples, in
  its order: their labels, parsed by the task without decoding images, must match."""
  spec = task.label_features(manifest, config.label_attribute)
  label_fn = task.label_fn(manifest, config.label_attribute)
  ds = eval_records(config, manifest).map(
      lambda serialized: label_fn(tf.io.parse_single_example(serialized, spec))).batch(1024)
  chunks = list(ds.as_numpy_iterator())
  expected = np.concatenate(chunks) if chunks else np.zeros((0, *labels.shape[1:]), labels.dtype)
  if expected.shape != labels.shape or not np.array_equal(expected, labels):
    raise RuntimeError(f"{config.data_dir}/{config.split}: the labels read back do not match "
                       "the eval pipeline's (example order differs)")


def _identity_size_buckets(identities: np.ndarray) -> np.ndarray:
  """Per example: the index into _BUCKET_NAMES of its identity's example count in the split."""
  _, inverse, counts = np.unique(identities, return_inverse=True, return_counts=True)
  return np.searchsorted(_BUCKET_EDGES, counts[inverse.reshape(-1)], side="right") - 1


def _task_report(task: Task, logits, labels, config: InputConfig, manifest: dict,
                 side: dict) -> dict:
  """The task's metrics over examples with a class, and the error sliced by side features."""
  probs = task.probabilities(logits).numpy()
  names = task.class_names(manifest, config.label_attribute)
  if probs.shape[1] != len(names):
    raise ValueError(f"the model has {logits.shape[1]} outputs; task {config.task!r} on "
                     f"{config.data_dir} has {len(names)} classes")
  known = task.known(labels)
  if not known.any():
    raise ValueError(f"{config.data_dir}/{config.split}: no example's identity was seen in "
                     "training (CelebA's official splits are identity-disjoint)")
  result = {"metrics": task.evaluate(labels[known], probs[known], names)[0],
            "class_names": names, "num_unknown_identity": int((~known).sum())}
  if result["num_unknown_identity"]:
    logging.warning("%d examples have identities unseen in training; left out of the metrics",
                    result["num_unknown_identity"])
  correct = task.correct(labels[known], probs[known])
  if correct is not None:
    result["slices"] = _slices(correct, labels[known], names, side, known,
                               task.slice_exclusions(config.label_attribute))
    if result["slices"]["by_attribute"]:
      result["fairness"] = fairness.rank_slices(result["slices"]["by_attribute"], correct)
  return result


def _slices(correct: np.ndarray, labels: np.ndarray, names: list[str], side: dict,
            known: np.ndarray, excluded: set[str]) -> dict:
  """Error by each other attribute's value, by identity-size bucket and by class."""
  # The label attribute itself is the by-class view; identities are sliced by bucket below.
  slice_values = {name: values[known] for name, values in side.items()
                  if name not in excluded | {schema.IDENTITY}}
  if schema.IDENTITY in side:
    slice_values["identity_examples"] = _identity_size_buckets(side[schema.IDENTITY])[known]
  listed = len(names) <= MAX_LISTED_CLASSES
  slices = metrics.sliced_error(correct, slice_values, labels if listed else None,
                                names if listed else None)
  by_bucket = slices["by_attribute"].get("identity_examples")
  if by_bucket is not None:
    slices["by_attribute"]["identity_examples"] = {
        _BUCKET_NAMES[int(b)]: stats for b, stats in by_bucket.items()}
  return slices


def _write_confusion_matrix(report: dict, out_dir: str) -> np.ndarray | None:
  matrix = report["metrics"].get("confusion_matrix")
  if matrix is None:
    return None
  image = metrics.confusion_matrix_image(matrix, report["class_names"])
  path = os.path.join(out_dir, "confusion_matrix.png")
  if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
    raise OSError(f"{path}: cv2.imwrite failed")
  report["confusion_matrix_png"] = path
  return image


def _summary_scalars(report: dict) -> dict[str, float]:
  numbers = report["metrics"]
  keys = ("accuracy", "loss", "f1_macro", "roc_auc", "top5_accuracy", "mean_accuracy", "mean_f1",
          "mean_roc_auc", "exact_match")
  scalars = {key: numbers[key] for key in keys if numbers.get(key) is not None}
  for name, values in report.get("slices", {}).get("by_attribute", {}).items():
    for value, stats in values.items():
      scalars[f"slice_error/{name}={value}"] = stats["error"]
  for name, stats in numbers.get("per_attribute", {}).items():
    scalars[f"attribute_accuracy/{name}"] = stats["accuracy"]
  if "fairness" in report:
    scalars.update(fairness.summary_scalars(report["fairness"]))
  return scalars


def _write_summaries(report: dict, image: np.ndarray | None, out_dir: str,
                     step: int | None) -> None:
  """One TensorBoard point per evaluated checkpoint, at the training step of its weights."""
  if step is None:
    logging.info("%s: weights from outside the run (no training step); not written to "
                 "TensorBoard", report["checkpoint_path"])
    return
  writer = tf.summary.create_file_writer(out_dir)
  with writer.as_default():
    for name, value in _summary_scalars(report).items():
      tf.summary.scalar(name, value, step=step)
    if image is not None:
      tf.summary.image("confusion_matrix", image[None], step=step)
    if "fairness" in report:  # the ranked table, in TensorBoard's text tab
      tf.summary.text("fairness", fairness.markdown_ranking(report["fairness"]), step=step)
  writer.close()


def _format_rows(rows: list[tuple[str, dict]], metric_names: tuple[str, ...]) -> list[str]:
  width = max([12] + [len(name) for name, _ in rows])
  lines = [" " * width + "".join(f"{m:>11}" for m in metric_names)]
  for name, stats in rows:
    lines.append(f"{name:>{width}}" + "".join(_cell(stats.get(m)) for m in metric_names))
  return lines


def _cell(value) -> str:
  if value is None:
    return f"{'-':>11}"
  return f"{value:>11.3f}" if isinstance(value, float) else f"{value:>11}"


def format_report(report: dict) -> str:
  """The console report: sklearn-style per-class table, headline numbers and slices."""
  numbers = report["metrics"]
  task = report["task"] + (f" ({report['label_attribute']})" if report["label_attribute"] else "")
  step = report["checkpoint_step"]
  weights = (f"{report['checkpoint']}: {report['checkpoint_path']}, "
             + ("weights from outside the run" if step is None else f"step {step}")
             + (", EMA" if report["ema"] else ""))
  lines = [f"eval of {report['model_dir']} [{weights}] on {report['data_dir']}"
           f"/{report['split']}: task={task}, {report['num_examples']} examples"
           + (f" of the manifest's {report['manifest_examples']} ({report['skipped_examples']} "
              "unreadable, skipped)" if report["skipped_examples"] else "")
           + (", flip TTA" if report["flip_tta"] else "")]
  chosen = report.get("selection")
  if chosen and chosen["on_scored_split"]:
    lines.append(f"note: these weights are the run's best by {chosen['monitor']} on its "
                 f"'{chosen['split']}' split ({chosen['data_dir']}), the split scored here: "
                 "its figures lean optimistic; --checkpoint=latest scores the final weights")
  for member in report.get("ensemble") or []:
    lines.append(f"  averaged with {member['model_dir']} [{member['checkpoint_path']}, step "
                 f"{member['checkpoint_step']}" + (", EMA" if member["ema"] else "") + "]")
  lines.append("")
  if "per_attribute" in numbers:
    lines += _format_rows(list(numbers["per_attribute"].items()),
                          ("accuracy", "precision", "recall", "f1", "roc_auc", "positives"))
    lines += ["", "  ".join(f"{k} {numbers[k]:.4f}" for k in (
        "mean_accuracy", "mean_f1", "exact_match", "loss"))]
    return "\n".join(lines)

  per_class = list(numbers["per_class"].items())
  if len(per_class) > MAX_LISTED_CLASSES:  # identities: the worst classes say the most
    per_class = sorted((r for r in per_class if r[1]["support"]), key=lambda r: r[1]["f1"])
    lines.append(f"(the {MAX_LISTED_CLASSES} classes with the lowest F1 of "
                 f"{len(numbers['per_class'])})")
    per_class = per_class[:MAX_LISTED_CLASSES]
  lines += _format_rows(per_class + [("macro avg", numbers["macro_avg"]),
                                     ("weighted avg", numbers["weighted_avg"])],
                        ("precision", "recall", "f1", "support"))
  headline = [f"accuracy {numbers['accuracy']:.4f}", f"loss {numbers['loss']:.4f}"]
  for key in ("roc_auc", "top5_accuracy"):
    if numbers.get(key) is not None:
      headline.append(f"{key} {numbers[key]:.4f}")
  if report.get("num_unknown_identity"):
    headline.append(f"({report['num_unknown_identity']} examples of unseen identities left out)")
  lines += ["", "  ".join(headline)]
  if "fairness" in report:  # every attribute value (and identity bucket), ranked
    lines += ["", "error by slice, worst first"] + fairness.format_ranking(report["fairness"])
  if "framing" in report:
    lines += ["", "accuracy by framing (drop from clean, points)"]
    lines += [f"  {r['name']:<12} {r['accuracy']:.4f}"
              + ("" if r["drop_points"] is None else f"  {r['drop_points']:+.2f}")
              for r in report["framing"]]
  by_class = [(f"class {name}", stats)
              for name, stats in report.get("slices", {}).get("by_class", {}).items()]
  if by_class:
    lines += ["", "error by class"] + _format_rows(by_class, ("error", "count"))
  return "\n".join(lines)
