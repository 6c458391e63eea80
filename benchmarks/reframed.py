"""The validation faces framed as other collections frame them, through launch.predict.

  python -m benchmarks.reframed --model_dir=runs/celeba_dev \
      --data_dir=data/val40/shards --framings=standard --output_json=reframed.json

Writes each framing's photos under --work_dir (kept, to look at), then runs predict on them
with its defaults (detect and align faces not of the training frame's size, enlarging a
tight photo's face up to the run's training zoom so the crop stays inside the photo), aligned
without that enlargement (--max_fit_zoom=1: the edge pixels repeat), and with detection off,
and tabulates the three accuracies and how many faces were aligned, missed, flagged with a
framing warning or enlarged. --modes=default runs only the first pass (a third of the time);
--modes=fallback adds a pass with --no_face=as_is (a photo the detector misses is predicted as
it is).
"""

from __future__ import annotations

from absl import app, flags

from engine.bench.reframed import DEFAULT_MODES, MODES, ReframedConfig, run_reframed
from engine.run.restore import read_config
from launch import usage

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run directory (required).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards with the split (default: the run's).")
_SPLIT = flags.DEFINE_string("split", "validation", "The split whose faces are re-framed.")
_FRAMINGS = flags.DEFINE_list("framings", ["clean", "tight_1.3", "loose_0.7"],
                              "engine.eval.framing names, or standard for the whole curve.")
_WORK_DIR = flags.DEFINE_string("work_dir", "runs/reframed", "The photos go here.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "Which weights predict loads.")
_MAX_FACES = flags.DEFINE_integer("max_faces", 0, "Only the split's first N faces (0: all).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the rows here.")
_MODES = flags.DEFINE_list(
    "modes", list(DEFAULT_MODES), f"Which predict passes to run over the photos, some of "
    f"{','.join(MODES)}: default (its defaults), unzoomed (aligned with --max_fit_zoom=1), "
    "as_is (no detection), fallback (its defaults with --no_face=as_is).")


def main(argv: list[str]) -> None:
  del argv
  if not _MODEL_DIR.value:
    raise app.UsageError("--model_dir is required")
  config = ReframedConfig(
      _MODEL_DIR.value, _DATA_DIR.value, _SPLIT.value, tuple(_FRAMINGS.value), _WORK_DIR.value,
      _CHECKPOINT.value, _MAX_FACES.value, _OUTPUT_JSON.value, tuple(_MODES.value))
  try:  # an unknown framing, a model_dir that is no run, a split the shards lack: one line
    read_config(config.validate().model_dir)
  except (OSError, ValueError) as e:
    usage.fail(e)
  report = run_reframed(config)
  print(report["markdown"])


if __name__ == "__main__":
  usage.run(main)
