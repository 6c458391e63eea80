"""One recipe, several backbones: validation accuracy, F1, training time, images/s, latency.

Each backbone is trained with the same ExperimentConfig (only the backbone and model_dir
change), evaluated on the validation split by engine.eval (every example once), and its
batch-1 latency is measured by engine.bench.latency at the recipe's image size and
precision. The table the README shows is this module's markdown output.
"""

from __future__ import annotations

import dataclasses
import json
import os


from engine.bench.latency import LatencyConfig, run_latency_benchmark
from engine.eval.evaluate import EvalConfig, evaluate
from engine.train import train
from engine.config import ExperimentConfig


@dataclasses.dataclass(frozen=True)
class RecipeTableConfig:
  experiment: ExperimentConfig
  backbones: tuple[str, ...] = ("resnet18",)
  work_dir: str = "runs/recipes"
  latency_iterations: int = 30
  output_json: str | None = None


def _row(config: RecipeTableConfig, backbone: str) -> dict:
  experiment = config.experiment
  experiment = dataclasses.replace(
      experiment, model=dataclasses.replace(experiment.model, backbone=backbone),
      train=dataclasses.replace(experiment.train,
                                model_dir=os.path.join(config.work_dir, backbone)))
  summary = train(experiment)
  report = evaluate(EvalConfig(experiment.train.model_dir, split=experiment.eval_split))
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
          "model_dir": experiment.train.model_dir}


def markdown_table(rows: list[dict]) -> str:
  lines = ["| backbone | val accuracy | val F1 (macro) | recall female / male | epochs | "
           "train minutes | train images/s | batch-1 p50 ms |", "|" + " --- |" * 8]
  for r in rows:
    recall = " / ".join(f"{v:.3f}" for v in r["recall_by_class"].values())
    latency = f"{r['latency_p50_ms']:.1f}" if r["latency_p50_ms"] else "-"
    lines.append(f"| {r['backbone']} | {100 * r['val_accuracy']:.2f}% | {r['val_f1_macro']:.4f} | "
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
