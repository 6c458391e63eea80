"""Training images/s per backbone: ours vs Keras 3 fit, tf_keras fit, Model Garden, one run.

  python -m benchmarks.throughput --backbones=resnet50 --image_size=128 --batch_size=32 \
      [--precision=auto|float32|mixed_bfloat16|mixed_float16] [--pipeline_steps=20] \
      [--data_dir=SHARDS] [--model_garden_python=PY] [--output_json=F]

Model Garden runs where `make model-garden-venv` installed it (or --model_garden_python).
"""

from __future__ import annotations

from absl import flags

from engine.bench.throughput import (CONTENDERS, DEFAULT_MODEL_GARDEN_PYTHON, ThroughputConfig,
                                     run_throughput_benchmark)
from launch import usage

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
_MODEL_GARDEN = flags.DEFINE_string("model_garden_python", DEFAULT_MODEL_GARDEN_PYTHON,
                                    "Python of a tf-models-official environment ('': skip).")
_CONTENDERS = flags.DEFINE_list("contenders", list(CONTENDERS), "Besides ours: which to time.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 4096, "n of the n x n peak matmul.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")
_COLUMNS = ("ours", "ours_stock_kernels", "keras_fit", "tf_keras_fit", "model_garden")


def _cell(value, fmt):
  return format(value, fmt) if value else "-"


def main(argv: list[str]) -> None:
  del argv
  size = [int(v) for v in _IMAGE_SIZE.value]
  report = run_throughput_benchmark(ThroughputConfig(
      backbones=tuple(_BACKBONES.value), image_size=(size[0], size[-1]),
      batch_size=_BATCH_SIZE.value, precision=_PRECISION.value, jit_compile=_JIT.value,
      warmup_steps=_WARMUP.value, steps=_STEPS.value, rounds=_ROUNDS.value, data_dir=_DATA_DIR.value,
      pipeline_steps=_PIPELINE_STEPS.value, model_garden_python=_MODEL_GARDEN.value,
      contenders=tuple(_CONTENDERS.value), matmul_size=_MATMUL_SIZE.value, output_json=_OUTPUT_JSON.value))
  peak = report["matmul_peak"]
  print(f"precision {report['precision']}, XLA {report['jit_compile']}; images/s (% of the "
        f"{peak['dtype']} matmul peak, {peak['gflops']:.0f} GFLOP/s)")
  print(f"{'backbone':<12}" + "".join(f"{k.replace('ours_stock_kernels', 'before'):>19}"
                                      for k in _COLUMNS) +
        f"{'vs before':>10}{'vs tf_keras':>12}{'vs garden':>10}{'pipeline':>10}{'wait':>7}")
  for r in report["results"]:
    rates, peaks = r["images_per_sec"], r["fraction_of_matmul_peak"]
    cells = "".join(f"{_cell(rates[k], '.1f') + ' (' + _cell(peaks[k] and 100 * peaks[k], '.0f') + '%)':>19}"
                    for k in _COLUMNS)
    ratios = [_cell(r[k], ".2f") for k in
              ("ours_vs_stock_kernels", "ours_vs_tf_keras_fit", "ours_vs_model_garden")]
    real = r.get("with_input_pipeline") or {}
    piped = [f"{real['images_per_sec']:.1f}", f"{100 * real['input_wait_fraction']:.1f}%"] \
        if real else ["-", "-"]
    print(f"{r['backbone']:<12}{cells}{ratios[0]:>10}{ratios[1]:>12}{ratios[2]:>10}"
          f"{piped[0]:>10}{piped[1]:>7}")
    for note in (r["tf_keras_note"], r["model_garden_note"]):
      if note:
        print(f"  {r['backbone']}: {note}")


if __name__ == "__main__":
  usage.run(main)
