"""Batch-1 latency and batch-N images/s of every deployable path (TensorFlow, TFLite,
ONNX Runtime, OpenVINO) vs model.predict and the FLOP floor of each path's precision.

  python -m benchmarks.latency [--backbones=resnet50,vgg11] [--image_size=224]
      [--batch_size=32] [--iterations=50] [--rounds=5] [--warmup=10]
      [--precisions=float32,auto] [--xla=off,on] [--nofreeze]
      [--runtimes=predict,tensorflow,tflite,onnxruntime,openvino]
      [--model_dir=TRAINED_RUN [--checkpoint=best]] [--intra_op_threads=N]
      [--inter_op_threads=N] [--output_json=F] [--output_csv=F]

With --model_dir, the run's own model is measured and every path reports its accuracy on
the run's validation split.
"""

from __future__ import annotations

from absl import app, flags

from engine.bench.latency import LatencyConfig, format_table, run_latency_benchmark
from engine.bench.runtimes import RUNTIMES
from launch import usage

_BACKBONES = flags.DEFINE_list(
    "backbones", None, "Backbones to measure; default: all registered except tiny_resnet.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", None, "H[,W]; default: each backbone's own.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch of the images/s measurement.")
_ITERATIONS = flags.DEFINE_integer("iterations", 50, "Timed batch-1 calls.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Batch-1 calls are interleaved in this many rounds.")
_WARMUP = flags.DEFINE_integer("warmup", 10, "Untimed batch-1 calls first.")
_THROUGHPUT_BATCHES = flags.DEFINE_integer("throughput_batches", 5, "Timed batch-N calls.")
_PRECISIONS = flags.DEFINE_list(
    "precisions", ["float32", "auto"], "float32|mixed_bfloat16|mixed_float16|auto.")
_XLA = flags.DEFINE_list("xla", ["off", "on"], "jit_compile settings: off and/or on.")
_FREEZE = flags.DEFINE_bool("freeze", True, "Fold variables into constants before compiling.")
_RUNTIMES = flags.DEFINE_list("runtimes", list(RUNTIMES), "Which paths to measure.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A trained run: measure its model and "
                                 "report validation accuracy per path.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "With --model_dir: which weights.")
_INTRA_OP = flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0: TF default).")
_INTER_OP = flags.DEFINE_integer("inter_op_threads", 0, "TF inter-op threads (0: TF default).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")
_OUTPUT_CSV = flags.DEFINE_string("output_csv", None, "Write one CSV line per result here.")

_SWITCH = {"off": False, "on": True}


def main(argv: list[str]) -> None:
  del argv
  size = [int(v) for v in _IMAGE_SIZE.value] if _IMAGE_SIZE.value else None
  unknown = set(_XLA.value) - set(_SWITCH)
  if unknown:
    raise app.UsageError(f"--xla takes off and/or on, got {sorted(unknown)}")
  report = run_latency_benchmark(LatencyConfig(
      backbones=tuple(_BACKBONES.value) if _BACKBONES.value else None,
      image_size=(size[0], size[-1]) if size else None, batch_size=_BATCH_SIZE.value,
      iterations=_ITERATIONS.value, rounds=_ROUNDS.value, warmup=_WARMUP.value,
      throughput_batches=_THROUGHPUT_BATCHES.value, precisions=tuple(_PRECISIONS.value),
      xla=tuple(_SWITCH[v] for v in _XLA.value), freeze=_FREEZE.value,
      runtimes=tuple(_RUNTIMES.value), model_dir=_MODEL_DIR.value, checkpoint=_CHECKPOINT.value,
      intra_op_threads=_INTRA_OP.value, inter_op_threads=_INTER_OP.value,
      output_json=_OUTPUT_JSON.value, output_csv=_OUTPUT_CSV.value))
  print(format_table(report))


if __name__ == "__main__":
  usage.run(main)
