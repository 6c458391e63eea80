"""Per conv shape of a backbone: stock weight-gradient kernel vs one matmul, same run.

  python -m benchmarks.conv_weight_grads --backbone=resnet50 --image_size=128 --batch_size=32
"""

from __future__ import annotations

import json

from absl import flags

from engine.bench.conv_weight_grads import ConvGradConfig, run_conv_grad_benchmark
from launch import usage

_BACKBONE = flags.DEFINE_string("backbone", "resnet50", "Backbone whose conv shapes to time.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Square input size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Compute dtype.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")


def main(argv: list[str]) -> None:
  del argv
  report = run_conv_grad_benchmark(ConvGradConfig(
      _BACKBONE.value, (_IMAGE_SIZE.value,) * 2, _BATCH_SIZE.value, _DTYPE.value))
  names = list(report["layers"][0]["ms"]) if report["layers"] else []
  print(f"{'input':<22}{'kernel':<20}{'stride':>7}" + "".join(f"{n + ' ms':>12}" for n in names)
        + "  GFLOP/s " + "/".join(names))
  for r in report["layers"]:
    print(f"{str(r['input'][1:]):<22}{str(r['kernel']):<20}{r['strides'][0]:>7}"
          + "".join(f"{r['ms'][n]:>12.2f}" for n in names)
          + "  " + " / ".join(f"{r['gflops'][n]:.0f}" for n in names))
  if _OUTPUT_JSON.value:
    with open(_OUTPUT_JSON.value, "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  usage.run(main)
