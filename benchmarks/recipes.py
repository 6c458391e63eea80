"""Train one recipe on several backbones and tabulate accuracy, time, throughput, latency.

  python -m benchmarks.recipes --flagfile=celeba_dev.flags \
      --backbones=resnet18,resnet34,vgg11,googlenet,mobilenet_v3_large,resnet50 \
      --epochs=8 --work_dir=runs/recipes --output_json=recipes.json

Every training flag of launch.train applies (the flagfile and overrides); only the
backbone and the model directory change per row.

Model selection without peeking at validation: add --cv_folds=5 to score each backbone by
identity-disjoint 5-fold cross-validation on the training partition first (folds are
written once under WORK_DIR/folds); the validation split is then scored once, at the end.
Recipe variants are flags on top of the recipe, and --validate=best trains and validates
only the candidate with the best fold mean:

  python -m benchmarks.recipes --flagfile=celeba_dev.flags --cv_folds=5 --validate=best \
      --variants="narrow: --zoom_range=0.9,1.1" --variants="wide: --zoom_range=0.7,1.45" \
      --work_dir=runs/cv --output_json=cv.json

A variant may name its own backbone ("vgg: --backbone=vgg11_bn --epochs=16"): it is then one
candidate, on that backbone. --framings=standard also scores every held-out fold and the
validation split re-framed (tight chips, loose frames, shifts, tilts), and
--select_by=worst_framing chooses the recipe by the folds' worst framing instead of their
clean accuracy. --validate=none stops after the folds: a recipe's cross-validated estimate
(e.g. with more folds) without another look at the validation split; with it,
--cv_train_fraction=0.5 trains each fold on half its people: a learning curve's point.

Each run is scored with its final weights; --checkpoint=best scores the trainer's best
checkpoint instead, which was chosen on the very split it is scored on (held-out fold or
validation), so the table then says its figures lean optimistic.

SIGTERM stops the table: the running fold saves its checkpoint, nothing half-trained is
scored, the command exits 1 naming the run, and rerunning it resumes.
"""

from __future__ import annotations

import shlex

from absl import app, flags

from engine.bench.recipes import RecipeTableConfig, SweepStopped, run_recipe_table
from launch import experiment_flags, usage

_BACKBONES = flags.DEFINE_list("backbones", ["resnet18"], "Backbones to train, one row each.")
_WORK_DIR = flags.DEFINE_string("work_dir", "runs/recipes", "One run directory per backbone here.")
_LATENCY_ITERATIONS = flags.DEFINE_integer("latency_iterations", 30, "Timed batch-1 calls.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the rows here.")
_CV_FOLDS = flags.DEFINE_integer(
    "cv_folds", 0, "Identity-disjoint K-fold cross-validation on the training split before the "
    "validation run (0: off).")
_CV_SEED = flags.DEFINE_integer("cv_seed", 0, "Shuffles identities before dealing them to folds.")
_CV_TRAIN_FRACTION = flags.DEFINE_float("cv_train_fraction", 1.0, "Train each fold on this "
                                        "share of its people, scored on the same held-out fold.")
_VARIANTS = flags.DEFINE_multi_string(
    "variants", [], "NAME: FLAGS..., a recipe variant: the flags are parsed on top of the "
    "recipe's (e.g. \"wide: --zoom_range=0.7,1.45 --translate=0.1\"). Repeat for more.")
_FRAMINGS = flags.DEFINE_list(
    "framings", [], "Also score each held-out fold and the validation split re-framed "
    "(engine.eval.framing names, or standard: the whole curve).")
_SELECT_BY = flags.DEFINE_enum(
    "select_by", "accuracy", ["accuracy", "worst_framing"], "What --validate=best maximises: "
    "the folds' mean clean accuracy, or the mean of each fold's worst framing (needs --framings).")
_CHECKPOINT = flags.DEFINE_enum(
    "checkpoint", "latest", ["latest", "best"], "The weights each fold and validation run is "
    "scored with: latest (the final weights) or best (the trainer's best checkpoint, chosen on "
    "the very split scored, so its figures lean optimistic).")
_VALIDATE = flags.DEFINE_enum(
    "validate", "all", ["all", "best", "none"], "all: validate every candidate; best: only "
    "the one with the best cross-validated mean; none: cross-validate only, the validation "
    "split untouched (best and none need --cv_folds).")


def _variants() -> tuple:
  variants = []
  for spec in _VARIANTS.value:
    name, sep, args = spec.partition(":")
    if not sep or not name.strip():
      raise ValueError(f"--variants={spec!r}: expected NAME: FLAGS, e.g. 'wide: --zoom_range=0.7,1.45'")
    variants.append((name.strip(), experiment_flags.experiment_config_with(shlex.split(args))))
  return tuple(variants)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:  # a contradiction (--validate=best without --cv_folds, a bad --variants) before any run
    config = RecipeTableConfig(
        experiment_flags.experiment_config_from_flags(), tuple(_BACKBONES.value),
        _WORK_DIR.value, _LATENCY_ITERATIONS.value, _OUTPUT_JSON.value, _CV_FOLDS.value,
        _CV_SEED.value, _variants(), _VALIDATE.value, tuple(_FRAMINGS.value),
        _SELECT_BY.value, _CHECKPOINT.value, _CV_TRAIN_FRACTION.value).validated()
  except (ValueError, KeyError) as e:
    usage.fail(e)
  try:
    report = run_recipe_table(config)
  except SweepStopped as e:
    usage.fail(e, usage.EXIT_FAILED)
  print(report["markdown"])


if __name__ == "__main__":
  usage.run(main, expand_argv=experiment_flags.resolve_flagfile_args)
