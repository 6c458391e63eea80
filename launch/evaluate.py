"""Evaluates a trained run on one split: report, slices, confusion matrix, JSON.

  python -m launch.evaluate --model_dir=runs/male --data_dir=shards/celeba --split=test \
      [--checkpoint=best|latest|PATH] [--output_json=report.json] [--batch_size=64] [--flip_tta] \
      [--framing=standard]   # also: accuracy with the faces re-framed (tight, loose, shifted, tilted)
      [--ensemble=runs/b,runs/c]   # average these runs' logits with model_dir's

A model_dir that is not a run (no config.json) or has no such checkpoint, a data_dir
without shards, or an unknown split: one line on stderr naming it, exit code 2.
"""

from __future__ import annotations

from absl import app, flags

from engine.eval import preflight  # no TensorFlow: mistakes answer at once
from launch import usage

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run directory (required).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shard directory (default: the run's "
                                "config.input.data_dir).")
_SPLIT = flags.DEFINE_string("split", "test", "The split to evaluate.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "best | latest | a step (1200) | a "
                                  ".weights.h5 file | a tf.train checkpoint prefix.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Examples per step (the last is padded).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write every number here as JSON.")
_ON_BAD_RECORD = flags.DEFINE_enum("on_bad_record", "error", ["error", "skip"],
                                   "An unreadable record: error (names the shard and record) or "
                                   "skip (evaluate the rest; the report says how many were left "
                                   "out).")
_VERIFY_SHARDS = flags.DEFINE_enum("verify_shards", "fast", ["fast", "full", "off"],
                                   "Check the split's shards against manifest.json first.")
_FRAMING = flags.DEFINE_list(
    "framing", [], "Also score the split re-framed: standard (the whole curve) or names of "
    "engine.eval.framing.FRAMINGS (clean, tight_1.3, loose_0.7, shift_left, rotate_10, ...).")
_ENSEMBLE = flags.DEFINE_list(
    "ensemble", [], "More run directories to average with --model_dir (same --checkpoint name; "
    "they must read the same input).")
_FLIP_TTA = flags.DEFINE_bool("flip_tta", None, "Average each image's logits with its mirror's "
                              "(default: as the run did during training).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _MODEL_DIR.value:
    raise app.UsageError("--model_dir is required")
  preflight.check_evaluation(_MODEL_DIR.value, _CHECKPOINT.value, _DATA_DIR.value, _SPLIT.value)
  from engine.eval.evaluate import EvalConfig, evaluate  # TensorFlow starts after the checks
  evaluate(EvalConfig(model_dir=_MODEL_DIR.value, data_dir=_DATA_DIR.value, split=_SPLIT.value,
                      checkpoint=_CHECKPOINT.value, batch_size=_BATCH_SIZE.value,
                      output_json=_OUTPUT_JSON.value, flip_tta=_FLIP_TTA.value,
                      on_bad_record=_ON_BAD_RECORD.value, verify_shards=_VERIFY_SHARDS.value,
                      framings=tuple(_FRAMING.value), ensemble=tuple(_ENSEMBLE.value)))


if __name__ == "__main__":
  usage.run(main, user_errors=(OSError, ValueError))
