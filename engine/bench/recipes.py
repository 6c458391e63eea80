"""One recipe, several backbones: validation accuracy, F1, training time, images/s, latency.

Each backbone is trained with the same ExperimentConfig (only the backbone and model_dir
change), evaluated on the validation split by engine.eval (every example once), and its
batch-1 latency is measured by engine.bench.latency at the recipe's image size and
precision. The table the README shows is this module's markdown output.

With `cv_folds=K` each backbone is first scored by identity-disjoint K-fold
cross-validation on the training partition (engine.data.folds): K runs, each trained on
K-1 folds and evaluated on the held-out one. Only then is the recipe trained on the whole
training partition and scored on the validation split, once. The fold mean is the estimate
to choose recipes by; the validation figure is reported beside it, with the gap.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from engine.bench.latency import LatencyConfig, run_latency_benchmark
from engine.config import ExperimentConfig
from engine.data.folds import FoldConfig, write_identity_folds
from engine.eval.evaluate import EvalConfig, evaluate
from engine.train import train


@dataclasses.dataclass(frozen=True)
class RecipeTableConfig:
  experiment: ExperimentConfig
  backbones: tuple[str, ...] = ("resnet18",)
  work_dir: str = "runs/recipes"
  latency_iterations: int = 30
  output_json: str | None = None
  cv_folds: int = 0
  cv_seed: int = 0


def _variant(experiment: ExperimentConfig, backbone: str, model_dir: str,
             data_dir: str | None = None) -> ExperimentConfig:
  inputs = experiment.input if data_dir is None else dataclasses.replace(
      experiment.input, data_dir=data_dir)
  return dataclasses.replace(
      experiment, input=inputs, model=dataclasses.replace(experiment.model, backbone=backbone),
      train=dataclasses.replace(experiment.train, model_dir=model_dir))


def _train_and_evaluate(experiment: ExperimentConfig) -> tuple[dict, dict]:
  summary = train(experiment)
  report = evaluate(EvalConfig(experiment.train.model_dir, split=experiment.eval_split))
  return summary, report


def cross_validate(config: RecipeTableConfig, backbone: str) -> dict:
  """Identity-disjoint K-fold estimate of the recipe on the training partition.

  Each fold run selects its checkpoint on its own held-out fold, exactly as the full run
  does on the validation split, so the fold scores estimate what that protocol yields.
  """
  fold_dirs = write_identity_folds(FoldConfig(
      config.experiment.input.data_dir, os.path.join(config.work_dir, "folds"),
      config.cv_folds, config.cv_seed))
  folds = []
  for k, fold_dir in enumerate(fold_dirs):
    experiment = _variant(config.experiment, backbone,
                          os.path.join(config.work_dir, backbone, f"fold-{k}"), fold_dir)
    summary, report = _train_and_evaluate(experiment)
    folds.append({"fold": k, "val_accuracy": report["metrics"]["accuracy"],
                  "val_examples": report["num_examples"],
                  "train_minutes": summary["wall_seconds"] / 60})
  accuracies = np.array([f["val_accuracy"] for f in folds])
  return {"folds": folds, "mean": float(accuracies.mean()),
          "std": float(accuracies.std(ddof=1)), "min": float(accuracies.min()),
          "max": float(accuracies.max())}


def _row(config: RecipeTableConfig, backbone: str) -> dict:
  cv = cross_validate(config, backbone) if config.cv_folds else None
  experiment = _variant(config.experiment, backbone, os.path.join(config.work_dir, backbone))
  summary, report = _train_and_evaluate(experiment)
  latency = run_latency_benchmark(LatencyConfig(
      backbones=(backbone,), image_size=tuple(experiment.model.image_size),
      precisions=(experiment.train.precision,), xla=(False,),
      iterations=config.latency_iterations, warmup=5, throughput_batches=1,
      runtimes=("tensorflow",)))["results"][0]
  metrics = report["metrics"]
  recalls = {name: c["recall"] for name, c in metrics.get("per_class", {}).items()}
  return {"backbone": backbone, "val_accuracy": metrics["accuracy"],
          "val_f1_macro": metrics["f1_macro"], "recall_by_class": recalls,
          "slices": report.get("slices"),
          "best_step": summary["best"]["best_step"], "epochs": experiment.train.epochs,
          "train_minutes": summary["wall_seconds"] / 60,
          "train_images_per_sec": summary["train_images_per_sec"],
          "precision": summary["precision"],
          "latency_p50_ms": latency["latency_ms"]["p50"] if not latency["error"] else None,
          "model_dir": experiment.train.model_dir, "cross_validation": cv,
          "cv_gap": None if cv is None else metrics["accuracy"] - cv["mean"]}


def _cv_cell(cv: dict | None) -> str:
  if cv is None:
    return "-"
  return (f"{100 * cv['mean']:.2f}% ± {100 * cv['std']:.2f} "
          f"({len(cv['folds'])} folds, {100 * cv['min']:.1f}-{100 * cv['max']:.1f})")


def markdown_table(rows: list[dict]) -> str:
  lines = ["| backbone | cross-validated accuracy | val accuracy | val F1 (macro) | "
           "recall female / male | epochs | train minutes | train images/s | batch-1 p50 ms |",
           "|" + " --- |" * 9]
  for r in rows:
    recall = " / ".join(f"{v:.3f}" for v in r["recall_by_class"].values())
    latency = f"{r['latency_p50_ms']:.1f}" if r["latency_p50_ms"] else "-"
    lines.append(f"| {r['backbone']} | {_cv_cell(r['cross_validation'])} | "
                 f"{100 * r['val_accuracy']:.2f}% | {r['val_f1_macro']:.4f} | "
                 f"{recall} | {r['epochs']} | {r['train_minutes']:.1f} | "
                 f"{r['train_images_per_sec']:.0f} | {latency} |")
  return "\n".join(lines)


def run_recipe_table(config: RecipeTableConfig) -> dict:
  """Trains the rows in order; the JSON is rewritten after each, so a long table that is
  stopped keeps its finished rows (and a rerun resumes each run from its checkpoints)."""
  rows = []
  for backbone in config.backbones:
    rows.append(_row(config, backbone))
    report = {"experiment": json.loads(config.experiment.to_json()), "rows": rows,
              "markdown": markdown_table(rows)}
    if config.output_json:
      with open(config.output_json, "w") as f:
        json.dump(report, f, indent=2)
  return report
