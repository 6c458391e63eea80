"""Training throughput: our loop against Keras 3, tf_keras and Model Garden, one run.

Per backbone, on the same synthetic in-memory batch (so only the training step counts),
same architecture, batch, optimizer (Adam) and precision:
  ours           engine.train's multi-step loop (steps_per_loop steps per host call),
                 fused batch norm, the device's weight-gradient kernels (matmul_conv),
                 fused Adam, XLA as `--jit_compile=auto` would choose
  ours_stock_kernels  the same loop with TensorFlow's own conv weight gradients and Keras'
                 own Adam: the step before issue 17 (its BN output and bias-free convs aside)
  ours_keras_bn  our loop with stock Keras 3 BatchNormalization (isolates the BN kernel)
  keras_fit      stock Keras 3: keras BN, model.compile + model.fit (Keras' own defaults)
  tf_keras_fit   tf_keras (Keras 2) applications model + fit: the seeds' stack
  model_garden   TF Model Garden's classification trainer (its ResNet, task, optimizer
                 factory and Orbit loop) in its own environment, a subprocess driven step
                 by step so its rounds interleave with the others (model_garden_trainer.py)
All variants run interleaved rounds; the best round counts. Each one's fraction of this
machine's matmul peak (a large tf.matmul in the compute dtype, timed before and after the
rows, the higher counting) is images/s x 3 x forward FLOPs per image / peak: forward,
input gradient and weight gradient each cost about one forward pass.
Then our loop on real shards (the input pipeline included) reports images/s and the
fraction of step time spent waiting for input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from engine.data import pipeline
from engine.config import AugmentConfig, InputConfig, ModelConfig
from engine.bench.latency import matmul_peak_gflops
from engine.models import build_model
from engine.models.flops import count_flops
from engine.models.matmul_conv import log_weight_grad_choice, weight_grads
from engine.monitor import DeviceSampler, machine_description
from engine import precision as precision_lib
from engine.train import strategy as strategy_lib
from engine.train.multistep import make_train_loop
from engine.tasks import TASKS
from engine.train.fused_adam import FusedAdam
from engine.train.task import TaskSpec, make_train_step

# tf_keras.applications constructors by our backbone name.
TF_KERAS_APPS = {
    "resnet50": "ResNet50", "resnet101": "ResNet101", "vgg16": "VGG16", "vgg19": "VGG19",
    "inception_v3": "InceptionV3", "inception_resnet_v2": "InceptionResNetV2",
    "mobilenet_v3_small": "MobileNetV3Small", "mobilenet_v3_large": "MobileNetV3Large",
    "efficientnet_v2_b0": "EfficientNetV2B0",
}
# Model Garden's ResNet depths by our backbone name (its vision backbones have no VGG or
# GoogLeNet).
MODEL_GARDEN_RESNETS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
# Where `make model-garden-venv` installs tf-models-official (it pins its own TensorFlow).
DEFAULT_MODEL_GARDEN_PYTHON = os.path.join(
    os.path.expanduser("~"), ".cache", "facetrain", "model_garden_venv", "bin", "python")
_MODEL_GARDEN_SCRIPT = os.path.join(os.path.dirname(__file__), "model_garden_trainer.py")
CONTENDERS = ("ours_stock_kernels", "ours_keras_bn", "keras_fit", "tf_keras_fit", "model_garden")
_PEAK_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


@dataclasses.dataclass(frozen=True)
class ThroughputConfig:
  backbones: tuple[str, ...] = ("resnet50",)
  image_size: tuple[int, int] = (128, 128)
  batch_size: int = 32
  precision: str = "auto"            # auto | float32 | mixed_bfloat16 | mixed_float16
  jit_compile: str = "auto"          # for `ours`: auto | true | false
  warmup_steps: int = 2
  steps: int = 8                     # timed steps per variant per round
  rounds: int = 2                    # interleaved rounds; each variant's best round counts
  data_dir: str | None = None        # shards for the pipeline run; None: synthetic shards
  pipeline_steps: int = 0            # 0: skip the real-input run
  model_garden_python: str = DEFAULT_MODEL_GARDEN_PYTHON  # "": skip Model Garden
  contenders: tuple[str, ...] = CONTENDERS  # which to time ("ours" always runs)
  matmul_size: int = 4096            # n of the n x n matmul that measures the peak
  output_json: str | None = None


def _batch(config: ThroughputConfig):
  images = tf.random.stateless_uniform([config.batch_size, *config.image_size, 3], [1, 2], 0, 255)
  labels = tf.cast(tf.random.stateless_uniform([config.batch_size], [3, 4]) < 0.5, tf.int32)
  return images, labels


def ours_step_runner(name: str, batch_norm: str, config: ThroughputConfig, policy: str,
                     use_jit: bool, dataset=None, kernels: str = "auto", augment=None):
  """Builds our model + loop; returns run_steps(n) -> input-wait fraction of those steps.

  kernels: "auto" (the device's choice: matmul weight gradients where faster, fused Adam)
  or "stock" (TensorFlow's weight-gradient kernels, Keras' Adam).
  `augment`: the step's device augmentation (the dataset then yields (pixels, params)).
  """
  with precision_lib.policy(policy), weight_grads(kernels):
    strategy = tf.distribute.get_strategy()
    model = build_model(ModelConfig(name, image_size=config.image_size, batch_norm=batch_norm))
    optimizer = FusedAdam(1e-4) if kernels == "auto" else keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    step_fn = make_train_step(TaskSpec(TASKS.get("attribute"), 1), model, optimizer,
                              config.batch_size, augment=augment)
  if kernels == "auto":
    log_weight_grad_choice(model)
  loop = make_train_loop(strategy, step_fn, use_jit, measure_wait=True)
  if dataset is None:
    dataset = tf.data.Dataset.from_tensors(_batch(config)).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(dataset))

  def run_steps(n):
    start = time.perf_counter()
    _, wait, _, done = loop(iterator, tf.constant(n))
    assert int(done) == n
    return float(wait) / (time.perf_counter() - start)

  return run_steps


def _fit(model, compile_fn, config: ThroughputConfig):
  compile_fn(model)
  dataset = tf.data.Dataset.from_tensors(_batch(config)).repeat()
  return lambda n: model.fit(dataset, steps_per_epoch=n, epochs=1, verbose=0) and None


def _keras_fit(name: str, config: ThroughputConfig, policy: str):
  with precision_lib.policy(policy), weight_grads("stock"):
    model = build_model(ModelConfig(name, image_size=config.image_size, batch_norm="keras"))
    return _fit(model, lambda m: m.compile(
        keras.optimizers.Adam(1e-4), keras.losses.BinaryCrossentropy(from_logits=True)), config)


def _tf_keras_fit(name: str, config: ThroughputConfig, policy: str):
  if name not in TF_KERAS_APPS:
    return None
  import tf_keras  # the `bench` extra

  tf_keras.mixed_precision.set_global_policy(policy)
  try:
    base = getattr(tf_keras.applications, TF_KERAS_APPS[name])(
        include_top=False, weights=None, input_shape=(*config.image_size, 3), pooling="avg")
    outputs = tf_keras.layers.Dense(1, dtype="float32")(base.output)
    model = tf_keras.Model(base.input, outputs)
    return _fit(model, lambda m: m.compile(
        tf_keras.optimizers.Adam(1e-4), tf_keras.losses.BinaryCrossentropy(from_logits=True)),
        config)
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")


def _model_garden(name: str, config: ThroughputConfig, policy: str, stack: contextlib.ExitStack):
  """(run_steps, None) driving Model Garden's trainer in its own python, or (None, why not)."""
  if name not in MODEL_GARDEN_RESNETS:
    return None, "Model Garden's vision backbones have no such model"
  python = config.model_garden_python
  if not python or not os.path.exists(python):
    return None, (f"skipped: no Model Garden environment at {python or '(none given)'}; "
                  "create it with `make model-garden-venv`")
  if config.image_size[0] != config.image_size[1]:
    return None, "skipped: Model Garden's runner takes square images"
  stderr = stack.enter_context(tempfile.TemporaryFile("w+"))
  process = stack.enter_context(subprocess.Popen(
      [python, _MODEL_GARDEN_SCRIPT, f"--depth={MODEL_GARDEN_RESNETS[name]}",
       f"--image_size={config.image_size[0]}", f"--batch_size={config.batch_size}",
       f"--precision={policy}", f"--warmup_steps={config.warmup_steps}"],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True))
  stack.callback(process.stdin.close)

  def reply() -> dict:
    line = process.stdout.readline()
    if not line:
      stderr.seek(0)
      raise RuntimeError(f"Model Garden's trainer ({python}) exited with {process.wait()}: "
                         f"{stderr.read()[-2000:]}")
    return json.loads(line)

  ready = reply()
  logging.info("Model Garden trainer ready: %s", ready)

  def run_steps(n):
    process.stdin.write(f"{n}\n")
    process.stdin.flush()
    reply()
    return 0.0

  return run_steps, None


def _interleaved_rates(variants: dict, config: ThroughputConfig) -> tuple[dict, dict]:
  """Warms every variant up, then times them in `rounds` interleaved rounds; the best
  round counts. Interleaving spreads background load over all variants alike instead of
  penalising whichever ran during it."""
  for run_steps in variants.values():
    run_steps(config.warmup_steps)
  rates = {name: 0.0 for name in variants}
  waits = {}
  for _ in range(config.rounds):
    for name, run_steps in variants.items():
      start = time.perf_counter()
      wait = run_steps(config.steps)
      rate = config.steps * config.batch_size / (time.perf_counter() - start)
      if rate > rates[name]:
        rates[name], waits[name] = rate, wait
  return rates, waits


def _ratio(a, b):
  return round(a / b, 3) if a and b else None


def _pipeline_dataset(config: ThroughputConfig, workdir: str) -> tf.data.Dataset:
  data_dir = config.data_dir
  if not data_dir:
    from engine.bench.input_pipeline import synthetic_shards
    data_dir = synthetic_shards(workdir, 1000)
  return pipeline.make_dataset(InputConfig(
      data_dir, image_size=config.image_size, global_batch_size=config.batch_size,
      augment=AugmentConfig(flip=True, zoom=0.1, translate=0.08)))


def _peak_fractions(rates: dict, step_gflop_per_image: float, peak_gflops: float) -> dict:
  return {k: round(v * step_gflop_per_image / peak_gflops, 4) if v else None
          for k, v in rates.items()}


def _measure_backbone(name: str, config: ThroughputConfig, policy: str, use_jit: bool) -> dict:
  unknown = set(config.contenders) - set(CONTENDERS)
  if unknown:
    raise ValueError(f"unknown contenders {sorted(unknown)}; known: {', '.join(CONTENDERS)}")
  builders = {
      "ours_stock_kernels": lambda: ours_step_runner(name, "fused", config, policy, use_jit,
                                                     kernels="stock"),
      "ours_keras_bn": lambda: ours_step_runner(name, "keras", config, policy, use_jit),
      "keras_fit": lambda: _keras_fit(name, config, policy),
      "tf_keras_fit": lambda: _tf_keras_fit(name, config, policy)}
  garden_note = "not requested"
  with contextlib.ExitStack() as stack:
    variants = {"ours": ours_step_runner(name, "fused", config, policy, use_jit)}
    variants.update({k: build() for k, build in builders.items() if k in config.contenders})
    if "model_garden" in config.contenders:
      variants["model_garden"], garden_note = _model_garden(name, config, policy, stack)
    rates, _ = _interleaved_rates({k: v for k, v in variants.items() if v}, config)
  for key in CONTENDERS:
    rates.setdefault(key, None)
  return {"backbone": name,
          "images_per_sec": {k: (round(v, 2) if v else None) for k, v in rates.items()},
          "ours_vs_stock_kernels": _ratio(rates["ours"], rates["ours_stock_kernels"]),
          "ours_vs_keras_fit": _ratio(rates["ours"], rates["keras_fit"]),
          "ours_vs_tf_keras_fit": _ratio(rates["ours"], rates["tf_keras_fit"]),
          "ours_vs_model_garden": _ratio(rates["ours"], rates["model_garden"]),
          "fused_bn_vs_keras_bn": _ratio(rates["ours"], rates["ours_keras_bn"]),
          "tf_keras_note": None if rates["tf_keras_fit"] else
          "tf_keras.applications has no such model" if "tf_keras_fit" in config.contenders
          else "not requested",
          "model_garden_note": garden_note}, rates


def run_throughput_benchmark(config: ThroughputConfig) -> dict:
  policy, why = precision_lib.resolve_precision(config.precision)
  use_jit, jit_why = strategy_lib.resolve_jit(config.jit_compile, tf.distribute.get_strategy())
  logging.info("precision %s (%s); XLA %s (%s)", policy, why, use_jit, jit_why)
  peak_dtype = _PEAK_DTYPE[policy]
  peaks = [matmul_peak_gflops(peak_dtype, config.matmul_size)]
  results = []
  with DeviceSampler() as sampler:
    for name in config.backbones:
      entry, rates = _measure_backbone(name, config, policy, use_jit)
      with precision_lib.policy("float32"):
        forward = count_flops(build_model(ModelConfig(name, image_size=config.image_size)))
      entry["step_gflop_per_image"] = round(3 * forward / 1e9, 3)
      entry["_rates"] = rates
      if config.pipeline_steps:
        with tempfile.TemporaryDirectory() as workdir:
          piped = {"pipeline": ours_step_runner(name, "fused", config, policy, use_jit,
                                     _pipeline_dataset(config, workdir)),
                   "synthetic": ours_step_runner(name, "fused", config, policy, use_jit)}
          real, waits = _interleaved_rates(piped, dataclasses.replace(
              config, steps=config.pipeline_steps))
        entry["with_input_pipeline"] = {
            "images_per_sec": round(real["pipeline"], 2),
            "input_wait_fraction": round(waits["pipeline"], 4),
            "vs_synthetic_input": _ratio(real["pipeline"], real["synthetic"])}
      results.append(entry)
  peaks.append(matmul_peak_gflops(peak_dtype, config.matmul_size))
  peak = max(peaks)
  for entry in results:
    entry["fraction_of_matmul_peak"] = _peak_fractions(
        entry.pop("_rates"), entry["step_gflop_per_image"], peak)
  report = {
      "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "output_json"},
      "precision": policy, "precision_reason": why, "jit_compile": use_jit, "jit_reason": jit_why,
      "matmul_peak": {"dtype": peak_dtype, "size": config.matmul_size,
                      "gflops": round(peak, 1), "runs_gflops": [round(p, 1) for p in peaks]},
      "machine": machine_description(), "device": sampler.summary(), "results": results,
  }
  if config.output_json:
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2, default=lambda o: None if o is np.nan else str(o))
  return report
