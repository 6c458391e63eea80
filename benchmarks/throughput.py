"""Training images/s per backbone: our loop vs stock Keras 3 fit vs tf_keras fit, one run.

  python -m benchmarks.throughput --backbones=resnet50 --image_size=128 --batch_size=32 \
      [--precision=auto|float32|mixed_bfloat16|mixed_float16] [--pipeline_steps=20] \
      [--data_dir=SHARDS] [--output_json=F]
"""

from __future__ import annotations

from absl import app, flags

from engine.bench.throughput import ThroughputConfig, run_throughput_benchmark

_BACKBONES = flags.DEFINE_list("backbones", ["resnet50"], "Backbones to measure.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", ["128"], "H[,W] of the input.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_PRECISION = flags.DEFINE_enum("precision", "auto",
                               ["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                               "Dtype policy (auto: as launch.train would choose).")
_JIT = flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "XLA for our loop.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 2, "Untimed steps (tracing, allocation).")
_STEPS = flags.DEFINE_integer("steps", 8, "Timed steps per variant and round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved timing rounds (best counts).")
_PIPELINE_STEPS = flags.DEFINE_integer("pipeline_steps", 0,
                                       "Also time our loop on real shards (0: skip).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards for the pipeline run (default: "
                                "synthetic CelebA-size faces).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")


def main(argv: list[str]) -> None:
  del argv
  size = [int(v) for v in _IMAGE_SIZE.value]
  report = run_throughput_benchmark(ThroughputConfig(
      backbones=tuple(_BACKBONES.value), image_size=(size[0], size[-1]),
      batch_size=_BATCH_SIZE.value, precision=_PRECISION.value, jit_compile=_JIT.value,
      warmup_steps=_WARMUP.value, steps=_STEPS.value, rounds=_ROUNDS.value, data_dir=_DATA_DIR.value,
      pipeline_steps=_PIPELINE_STEPS.value, output_json=_OUTPUT_JSON.value))
  print(f"precision {report['precision']}, XLA {report['jit_compile']}; images/s")
  print(f"{'backbone':<20}{'ours':>8}{'ours+kerasBN':>13}{'keras fit':>10}{'tf_keras fit':>13}"
        f"{'vs keras':>10}{'vs tf_keras':>12}{'pipeline':>10}{'wait':>7}")
  for r in report["results"]:
    rates = r["images_per_sec"]
    cells = [f"{rates[k]:.1f}" if rates[k] else "-" for k in
             ("ours", "ours_keras_bn", "keras_fit", "tf_keras_fit")]
    ratios = [f"{r[k]:.2f}x" if r[k] else "-" for k in ("ours_vs_keras_fit", "ours_vs_tf_keras_fit")]
    real = r.get("with_input_pipeline") or {}
    piped = [f"{real['images_per_sec']:.1f}", f"{100 * real['input_wait_fraction']:.1f}%"] \
        if real else ["-", "-"]
    print(f"{r['backbone']:<20}{cells[0]:>8}{cells[1]:>13}{cells[2]:>10}{cells[3]:>13}"
          f"{ratios[0]:>10}{ratios[1]:>12}{piped[0]:>10}{piped[1]:>7}")


if __name__ == "__main__":
  app.run(main)
