"""Training images/s per backbone: fused BN vs stock Keras 3 BN vs tf_keras, one run.

  python -m benchmarks.throughput --backbones=resnet50 --image_size=128 --batch_size=32 \
      [--precision=float32|mixed_bfloat16|mixed_float16] [--output_json=F]
"""

from __future__ import annotations

from absl import app, flags

from engine.bench.throughput import ThroughputConfig, run_throughput_benchmark

_BACKBONES = flags.DEFINE_list("backbones", ["resnet50"], "Backbones to measure.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", ["128"], "H[,W] of the synthetic input.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_PRECISION = flags.DEFINE_enum("precision", "float32",
                               ["float32", "mixed_bfloat16", "mixed_float16"], "Dtype policy.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 2, "Untimed steps (tracing, allocation).")
_STEPS = flags.DEFINE_integer("steps", 6, "Timed steps per variant.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")


def main(argv: list[str]) -> None:
  del argv
  size = [int(v) for v in _IMAGE_SIZE.value]
  report = run_throughput_benchmark(ThroughputConfig(
      backbones=tuple(_BACKBONES.value), image_size=(size[0], size[-1]),
      batch_size=_BATCH_SIZE.value, precision=_PRECISION.value, warmup_steps=_WARMUP.value,
      steps=_STEPS.value, output_json=_OUTPUT_JSON.value))
  print(f"{'backbone':<22}{'fused':>9}{'keras BN':>10}{'tf_keras':>10}{'vs keras':>10}"
        f"{'vs tf_keras':>12}   images/s, {_PRECISION.value}")
  for r in report["results"]:
    rates = r["images_per_sec"]
    tfk = f"{rates['tf_keras']:.1f}" if rates["tf_keras"] else "-"
    vs_tfk = f"{r['fused_vs_tf_keras']:.2f}x" if r["fused_vs_tf_keras"] else "-"
    print(f"{r['backbone']:<22}{rates['fused']:>9.1f}{rates['keras_bn']:>10.1f}{tfk:>10}"
          f"{r['fused_vs_keras_bn']:>9.2f}x{vs_tfk:>12}")


if __name__ == "__main__":
  app.run(main)
