"""One recipe, several backbones: validation accuracy, F1, training time, images/s, latency.

Each backbone is trained with the same ExperimentConfig (only the backbone and model_dir
change), evaluated on the validation split by engine.eval (every example once), and its
batch-1 latency is measured by engine.bench.latency at the recipe's image size and
precision. The table the README shows is this module's markdown output.

With `cv_folds=K` each candidate (a backbone, or a recipe variant on a backbone) is first
scored by identity-disjoint K-fold cross-validation on the training partition
(engine.data.folds): K runs, each trained on K-1 folds and evaluated on the held-out one,
the same folds and seed for every candidate. The fold mean is what recipes are chosen by:
with `validate="best"` only the candidate with the highest fold mean is then trained on the
whole training partition and scored on the validation split, once, so the validation figure
never took part in the choice; the others keep their cross-validated row. The gap between
the fold estimate and the validation split is reported.

With `framings` (engine.eval.framing names, "standard" for the whole curve) every held-out
fold, and the validation split, is also scored re-framed: tighter chips, looser frames,
shifts, tilts. Each fold's worst framing is its robustness score, and
`select_by="worst_framing"` chooses the recipe by the fold mean of that worst point instead
of the clean accuracy: robustness chosen on the training partition too, never on validation.

Every run is scored with its final weights by default (`checkpoint="latest"`). The trainer
also keeps the weights that scored best on its evaluation split, but for a fold run that split
is the held-out fold and for the full run the validation split: scored there, the best
checkpoint's figure took part in choosing it. `checkpoint="best"` scores those instead (the
protocol of the tables measured before 2026-12-02), and says so in the table.

A rerun resumes every run from its checkpoints and reuses every evaluation whose weights,
shards and settings are unchanged (saved in the run directory as recipes_eval.json), so a
candidate added to a finished table costs only its own runs.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os

import numpy as np

from engine.atomic_write import atomic_write_json
from engine.bench.latency import LatencyConfig, run_latency_benchmark
from engine.config import ExperimentConfig
from engine.data.folds import FoldConfig, write_identity_folds
from engine.data.integrity import file_sha256
from engine.data.manifest import read_manifest
from engine.eval import framing
from engine.eval.evaluate import EvalConfig, evaluate
from engine.run.restore import resolve_checkpoint
from engine.train import train


VALIDATE = ("all", "best", "none")
CHECKPOINTS = ("latest", "best")
# select_by -> the cross-validation result's key it maximises
_SELECT_KEYS = {"accuracy": "mean", "worst_framing": "worst_framing_mean"}
SELECT_BY = tuple(_SELECT_KEYS)


@dataclasses.dataclass(frozen=True)
class RecipeTableConfig:
  """What to train and how to score it.

  Attributes:
    experiment: the recipe.
    backbones: one candidate per backbone (and per variant).
    variants: (name, recipe) pairs that replace `experiment`, e.g. the same recipe with
      more zoom; their runs go under WORK_DIR/NAME/BACKBONE. A variant whose backbone is
      not the recipe's runs on that backbone alone.
    cv_folds: identity-disjoint K-fold cross-validation of every candidate first (0: off).
    validate: "all" trains every candidate on the training split and scores it on the
      validation split; "best" (needs cv_folds) only the one with the best fold mean;
      "none" (needs cv_folds) none of them: a fold estimate that leaves validation untouched.
    framings: also score every held-out fold and the validation split under these
      framings (engine.eval.framing names; "standard" is the whole curve).
    select_by: what "best" maximises: the fold mean of the clean "accuracy", or of each
      fold's "worst_framing" accuracy (needs framings).
    checkpoint: the weights each run is scored with: "latest" (the final weights, EMA when
      the run kept them) or "best" (those the trainer chose on the very split scored).
    cv_train_fraction: each fold run trains on this share of its training images (whole
      people, engine.data.folds) and is scored on the same held-out fold: a point of the
      learning curve (needs validate="none": the validation run would train on all of them).
  """

  experiment: ExperimentConfig
  backbones: tuple[str, ...] = ("resnet18",)
  work_dir: str = "runs/recipes"
  latency_iterations: int = 30
  output_json: str | None = None
  cv_folds: int = 0
  cv_seed: int = 0
  variants: tuple[tuple[str, ExperimentConfig], ...] = ()
  validate: str = "all"
  framings: tuple[str, ...] = ()
  select_by: str = "accuracy"
  checkpoint: str = "latest"
  cv_train_fraction: float = 1.0

  def validated(self) -> "RecipeTableConfig":
    if self.validate not in VALIDATE:
      raise ValueError(f"validate must be one of {', '.join(VALIDATE)}, got {self.validate!r}")
    if self.checkpoint not in CHECKPOINTS:
      raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got "
                       f"{self.checkpoint!r}")
    if self.select_by not in SELECT_BY:
      raise ValueError(f"select_by must be one of {', '.join(SELECT_BY)}, got {self.select_by!r}")
    if self.select_by == "worst_framing" and not (self.framings and self.cv_folds):
      raise ValueError("select_by='worst_framing' chooses by the folds' framing curves: set "
                       "cv_folds and framings (e.g. standard)")
    framing.parse_framings(self.framings)  # unknown names fail here, before any training
    if self.validate in ("best", "none") and not self.cv_folds:
      raise ValueError(f"validate={self.validate!r} scores by cross-validation: set cv_folds "
                       "(e.g. 5)")
    if not 0 < self.cv_train_fraction <= 1:
      raise ValueError(f"cv_train_fraction must be in (0, 1], got {self.cv_train_fraction}")
    if self.cv_train_fraction < 1 and (not self.cv_folds or self.validate != "none"):
      raise ValueError(f"cv_train_fraction={self.cv_train_fraction} trains the folds on part "
                       "of their faces, a learning curve's point: set cv_folds and "
                       "validate='none' (a validation run would train on all of them)")
    names = [name for name, _ in self.variants]
    if len(set(names)) != len(names) or any(not n or "/" in n or n == "folds" for n in names):
      raise ValueError(f"variant names must be distinct directory names, got {names}")
    return self


@dataclasses.dataclass(frozen=True)
class Candidate:
  variant: str | None
  backbone: str
  experiment: ExperimentConfig
  run_dir: str


def _variant(experiment: ExperimentConfig, backbone: str, model_dir: str,
             data_dir: str | None = None) -> ExperimentConfig:
  inputs = experiment.input if data_dir is None else dataclasses.replace(
      experiment.input, data_dir=data_dir)
  return dataclasses.replace(
      experiment, input=inputs, model=dataclasses.replace(experiment.model, backbone=backbone),
      train=dataclasses.replace(experiment.train, model_dir=model_dir))


# In each run directory: its evaluation report, with the weights, data and settings it is of.
SAVED_EVALUATION = "recipes_eval.json"


class SweepStopped(RuntimeError):
  """A run of the table stopped on SIGTERM (saved, resumable): the table stops with it,
  instead of scoring a half-trained run and going on to the next one."""


def _train_and_evaluate(experiment: ExperimentConfig, framings: tuple[str, ...],
                        checkpoint: str) -> tuple[dict, dict]:
  summary = train(experiment)
  if summary["stopped_by"] == "SIGTERM":
    raise SweepStopped(
        f"{experiment.train.model_dir}: stopped by SIGTERM at step {summary['step']} of "
        f"{summary['total_steps']} (checkpoint saved); the table stops here with what "
        "finished. Rerun the same command to resume")
  return summary, _evaluation(EvalConfig(experiment.train.model_dir, checkpoint=checkpoint,
                                         split=experiment.eval_split, framings=framings),
                               experiment.input.data_dir)


def _weights_sha256(model_dir: str, checkpoint: str) -> str:
  """SHA-256 of the weights a checkpoint name means: the best weights' one file, or every
  file of a training checkpoint (its .index and .data-* shards, in name order)."""
  kind, path = resolve_checkpoint(model_dir, checkpoint)
  if kind == "h5":
    return file_sha256(path)
  files = sorted(glob.glob(glob.escape(path) + ".*"))
  return hashlib.sha256("".join(f"{os.path.basename(f)}:{file_sha256(f)}\n"
                                for f in files).encode()).hexdigest()


def _evaluation(config: EvalConfig, data_dir: str) -> dict:
  """evaluate(config) of a run's weights, or the report a previous run of the table saved
  for the same weights (SHA-256), the same shards (manifest.json's SHA-256, which lists every
  shard's) and the same settings: a rerun that adds a candidate re-scores nothing else.
  `data_dir`: the run's shards, which `config` (data_dir None) evaluates."""
  key = {"eval": json.loads(json.dumps(dataclasses.asdict(config))),
         "weights_sha256": _weights_sha256(config.model_dir, config.checkpoint),
         "manifest_sha256": file_sha256(os.path.join(data_dir, "manifest.json"))}
  path = os.path.join(config.model_dir, SAVED_EVALUATION)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("key") == key:
      logging.info("%s: reused, saved for these weights (SHA-256 %s...), shards and settings",
                   path, key["weights_sha256"][:12])
      return saved["report"]
  report = evaluate(config)
  atomic_write_json(path, {"key": key, "report": report})
  return report


def _worst_framing(report: dict) -> dict | None:
  """The framing point with the lowest accuracy ({name, accuracy, drop_points})."""
  if not report.get("framing"):
    return None
  worst = min(report["framing"], key=lambda r: r["accuracy"])
  return {"name": worst["name"], "accuracy": worst["accuracy"],
          "drop_points": worst["drop_points"]}


def candidates(config: RecipeTableConfig) -> list[Candidate]:
  """One per variant and backbone; a variant that names its own backbone (e.g.
  "vgg: --backbone=vgg11_bn --epochs=16") is one candidate, on that backbone only."""
  found = []
  for name, experiment in config.variants or ((None, config.experiment),):
    own = experiment.model.backbone
    pinned = name is not None and own != config.experiment.model.backbone
    for backbone in (own,) if pinned else config.backbones:
      found.append(Candidate(name, backbone, experiment,
                             os.path.join(config.work_dir, *([name] if name else []), backbone)))
  return found


def cross_validate(config: RecipeTableConfig, candidate: Candidate) -> dict:
  """Identity-disjoint K-fold estimate of the recipe on the training partition.

  Each fold run is scored on its held-out fold with `config.checkpoint`'s weights, as the
  full run is on the validation split, so the fold scores estimate what that protocol yields.
  """
  fold_config = FoldConfig(config.experiment.input.data_dir,
                           os.path.join(config.work_dir, "folds"), config.cv_folds,
                           config.cv_seed, train_fraction=config.cv_train_fraction)
  fold_dirs = write_identity_folds(fold_config)
  folds = []
  for k, fold_dir in enumerate(fold_dirs):  # a subset's runs beside the whole folds' ones
    experiment = _variant(candidate.experiment, candidate.backbone,
                          os.path.join(candidate.run_dir, f"fold-{k}{fold_config.suffix}"),
                          fold_dir)
    summary, report = _train_and_evaluate(experiment, config.framings, config.checkpoint)
    folds.append({"fold": k, "val_accuracy": report["metrics"]["accuracy"],
                  "train_examples": read_manifest(fold_dir)["splits"]["train"]["num_examples"],
                  "checkpoint_step": report["checkpoint_step"],
                  "val_examples": report["num_examples"],
                  "train_minutes": summary["wall_seconds"] / 60,
                  "worst_framing": _worst_framing(report)})
  accuracies = np.array([f["val_accuracy"] for f in folds])
  cv = {"folds": folds, "mean": float(accuracies.mean()),
        "std": float(accuracies.std(ddof=1)), "min": float(accuracies.min()),
        "max": float(accuracies.max()), "worst_framing_mean": None, "worst_framing_std": None}
  if config.framings:
    worst = np.array([f["worst_framing"]["accuracy"] for f in folds])
    cv.update(worst_framing_mean=float(worst.mean()), worst_framing_std=float(worst.std(ddof=1)))
  return cv


_NOT_CHOSEN = "another recipe cross-validated better"
_NOT_ASKED = "cross-validation only (validate=none)"


def best_candidate(scores: list[dict], select_by: str) -> int:
  """The index of the cross-validation result with the highest fold mean of `select_by`
  (the clean accuracy, or each fold's worst framing); the first one wins a tie."""
  key = _SELECT_KEYS[select_by]
  return max(range(len(scores)), key=lambda i: scores[i][key])


def _cv_row(candidate: Candidate, cv: dict | None, not_validated: str | None) -> dict:
  """The candidate's row before (or without) validation: `not_validated` says why not."""
  return {"variant": candidate.variant, "backbone": candidate.backbone,
          "epochs": candidate.experiment.train.epochs, "cross_validation": cv,
          "validated": not_validated is None, "not_validated": not_validated,
          "model_dir": None, "val_accuracy": None, "val_f1_macro": None,
          "recall_by_class": {}, "slices": None, "best_step": None, "checkpoint_step": None,
          "train_minutes": None,
          "train_images_per_sec": None, "precision": None, "latency_p50_ms": None,
          "cv_gap": None, "val_worst_framing": None}


def _validated_row(candidate: Candidate, cv: dict | None, config: RecipeTableConfig) -> dict:
  """Trains the candidate on the training split and scores it on the validation split."""
  row = _cv_row(candidate, cv, None)
  experiment = _variant(candidate.experiment, candidate.backbone, candidate.run_dir)
  summary, report = _train_and_evaluate(experiment, config.framings, config.checkpoint)
  latency = run_latency_benchmark(LatencyConfig(
      backbones=(candidate.backbone,), image_size=tuple(experiment.model.image_size),
      precisions=(experiment.train.precision,), xla=(False,),
      iterations=config.latency_iterations, warmup=5, throughput_batches=1,
      runtimes=("tensorflow",)))["results"][0]
  metrics = report["metrics"]
  recalls = {name: c["recall"] for name, c in metrics.get("per_class", {}).items()}
  row.update({"val_accuracy": metrics["accuracy"],
              "val_f1_macro": metrics["f1_macro"], "recall_by_class": recalls,
              "slices": report.get("slices"),
              "best_step": summary["best"]["best_step"],
              "checkpoint_step": report["checkpoint_step"],
              "train_minutes": summary["wall_seconds"] / 60,
              "train_images_per_sec": summary["train_images_per_sec"],
              "precision": summary["precision"],
              "latency_p50_ms": latency["latency_ms"]["p50"] if not latency["error"] else None,
              "model_dir": experiment.train.model_dir,
              "cv_gap": None if cv is None else metrics["accuracy"] - cv["mean"],
              "val_worst_framing": _worst_framing(report)})
  return row


def _cv_cell(cv: dict | None) -> str:
  if cv is None:
    return "-"
  faces = np.mean([f["train_examples"] for f in cv["folds"]])
  return (f"{100 * cv['mean']:.2f}% ± {100 * cv['std']:.2f} "
          f"({len(cv['folds'])} folds, {100 * cv['min']:.1f}-{100 * cv['max']:.1f}; "
          f"trained on {faces:,.0f} faces)")


def _percent(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.2f}%"


def _framing_cell(row: dict) -> str:
  """Worst framing, cross-validated (fold mean ± sd) / on validation (its name and drop)."""
  cv, val = row["cross_validation"], row["val_worst_framing"]
  parts = ["-" if not cv or cv.get("worst_framing_mean") is None else
           f"{100 * cv['worst_framing_mean']:.2f}% ± {100 * cv['worst_framing_std']:.2f}",
           "-" if val is None else
           f"{_percent(val['accuracy'])} ({val['name']}, -{val['drop_points']:.2f})"]
  return " / ".join(parts)


_WEIGHTS_SCORED = {
    "latest": "Each run scored with its final weights.",
    "best": "Each run scored with its best checkpoint, chosen on the split scored: the figures "
            "lean optimistic."}


def markdown_table(rows: list[dict], framings: bool = False, checkpoint: str = "latest") -> str:
  """The README's table, and below it which weights were scored; `framings` adds the
  worst-framing column."""
  extra = " worst framing: cross-validated / val |" if framings else ""
  header = ("| recipe | cross-validated accuracy | val accuracy |" + extra + " val F1 (macro) | "
            "recall female / male | epochs | train minutes | train images/s | batch-1 p50 ms |")
  lines = [header, "|" + " --- |" * (header.count("|") - 1)]
  for r in rows:
    recall = " / ".join(f"{v:.3f}" for v in r["recall_by_class"].values()) or "-"
    name = f"{r['variant']} ({r['backbone']})" if r["variant"] else r["backbone"]
    framing_cell = f" {_framing_cell(r)} |" if framings else ""
    if not r["validated"]:
      lines.append(f"| {name} | {_cv_cell(r['cross_validation'])} | not validated: "
                   f"{r['not_validated']} |{framing_cell} - | - | {r['epochs']} | - | - | - |")
      continue
    latency = f"{r['latency_p50_ms']:.1f}" if r["latency_p50_ms"] else "-"
    lines.append(f"| {name} | {_cv_cell(r['cross_validation'])} | "
                 f"{_percent(r['val_accuracy'])} |{framing_cell} {r['val_f1_macro']:.4f} | "
                 f"{recall} | {r['epochs']} | {r['train_minutes']:.1f} | "
                 f"{r['train_images_per_sec']:.0f} | {latency} |")
  return "\n".join(lines + ["", _WEIGHTS_SCORED[checkpoint]])


def run_recipe_table(config: RecipeTableConfig) -> dict:
  """Cross-validates every candidate (when asked), then trains and validates them (all, or
  the best by fold mean). The JSON is rewritten after each step, so a long table that is
  stopped keeps what finished (and a rerun resumes each run from its checkpoints)."""
  config = config.validated()
  todo = candidates(config)
  scores: list[dict | None] = [None] * len(todo)

  def write(rows: list[dict]) -> dict:
    report = {"experiment": json.loads(config.experiment.to_json()),
              "variants": {name: json.loads(e.to_json()) for name, e in config.variants},
              "cv_folds": config.cv_folds, "cv_train_fraction": config.cv_train_fraction,
              "validate": config.validate, "rows": rows,
              "framings": list(config.framings), "select_by": config.select_by,
              "checkpoint": config.checkpoint,
              "markdown": markdown_table(rows, bool(config.framings), config.checkpoint)}
    if config.output_json:
      atomic_write_json(config.output_json, report)
    return report

  if config.cv_folds:
    for i, candidate in enumerate(todo):
      scores[i] = cross_validate(config, candidate)
      write([_cv_row(c, cv, "cross-validation still running")
             for c, cv in zip(todo, scores) if cv])
  if config.validate == "none":
    return write([_cv_row(c, cv, _NOT_ASKED) for c, cv in zip(todo, scores)])
  chosen = set(range(len(todo)))
  if config.validate == "best":
    chosen = {best_candidate(scores, config.select_by)}
  rows: dict[int, dict] = {}
  report = None
  for i in sorted(chosen):
    rows[i] = _validated_row(todo[i], scores[i], config)
    report = write([rows[j] if j in rows else _cv_row(c, scores[j], _NOT_CHOSEN)
                    for j, c in enumerate(todo) if j in rows or j not in chosen])
  return report
