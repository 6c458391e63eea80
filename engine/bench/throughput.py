"""Training throughput: our loop against stock Keras 3 `fit` and tf_keras `fit`, one run.

Per backbone, on the same synthetic in-memory batch (so only the training step counts),
same architecture, batch, optimizer (Adam) and precision:
  ours           engine.train's multi-step loop (steps_per_loop steps per host call),
                 fused batch norm, XLA as `--jit_compile=auto` would choose
  ours_keras_bn  the same loop with stock Keras 3 BatchNormalization (isolates the BN kernel)
  keras_fit      stock Keras 3: keras BN, model.compile + model.fit (Keras' own defaults)
  tf_keras_fit   tf_keras (Keras 2) applications model + fit: the seeds' / Model Garden's stack
Then our loop on real shards (the input pipeline included) reports images/s and the
fraction of step time spent waiting for input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from engine.data import pipeline
from engine.config import AugmentConfig, InputConfig, ModelConfig
from engine.models import build_model
from engine.monitor import DeviceSampler, machine_description
from engine import precision as precision_lib
from engine.train import strategy as strategy_lib
from engine.train.multistep import make_train_loop
from engine.tasks import TASKS
from engine.train.task import TaskSpec, make_train_step

# tf_keras.applications constructors by our backbone name.
TF_KERAS_APPS = {
    "resnet50": "ResNet50", "resnet101": "ResNet101", "vgg16": "VGG16", "vgg19": "VGG19",
    "inception_v3": "InceptionV3", "inception_resnet_v2": "InceptionResNetV2",
    "mobilenet_v3_small": "MobileNetV3Small", "mobilenet_v3_large": "MobileNetV3Large",
    "efficientnet_v2_b0": "EfficientNetV2B0",
}


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
  output_json: str | None = None


def _batch(config: ThroughputConfig):
  images = tf.random.stateless_uniform([config.batch_size, *config.image_size, 3], [1, 2], 0, 255)
  labels = tf.cast(tf.random.stateless_uniform([config.batch_size], [3, 4]) < 0.5, tf.int32)
  return images, labels


def _ours(name: str, batch_norm: str, config: ThroughputConfig, policy: str, use_jit: bool,
          dataset=None, augment=None):
  """Builds our model + loop; returns run_steps(n) -> input-wait fraction of those steps.

  `augment`: the step's device augmentation (the dataset then yields (pixels, params)).
  """
  with precision_lib.policy(policy):
    strategy = tf.distribute.get_strategy()
    model = build_model(ModelConfig(name, image_size=config.image_size, batch_norm=batch_norm))
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    step_fn = make_train_step(TaskSpec(TASKS.get("attribute"), 1), model, optimizer,
                              config.batch_size, augment=augment)
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
  with precision_lib.policy(policy):
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


def run_throughput_benchmark(config: ThroughputConfig) -> dict:
  policy, why = precision_lib.resolve_precision(config.precision)
  use_jit, jit_why = strategy_lib.resolve_jit(config.jit_compile, tf.distribute.get_strategy())
  logging.info("precision %s (%s); XLA %s (%s)", policy, why, use_jit, jit_why)
  results = []
  with DeviceSampler() as sampler:
    for name in config.backbones:
      variants = {"ours": _ours(name, "fused", config, policy, use_jit),
                  "ours_keras_bn": _ours(name, "keras", config, policy, use_jit),
                  "keras_fit": _keras_fit(name, config, policy),
                  "tf_keras_fit": _tf_keras_fit(name, config, policy)}
      rates, _ = _interleaved_rates({k: v for k, v in variants.items() if v}, config)
      rates.setdefault("tf_keras_fit", None)
      entry = {"backbone": name,
               "images_per_sec": {k: (round(v, 2) if v else None) for k, v in rates.items()},
               "ours_vs_keras_fit": _ratio(rates["ours"], rates["keras_fit"]),
               "ours_vs_tf_keras_fit": _ratio(rates["ours"], rates["tf_keras_fit"]),
               "fused_bn_vs_keras_bn": _ratio(rates["ours"], rates["ours_keras_bn"]),
               "tf_keras_note": None if rates["tf_keras_fit"] else
               "tf_keras.applications has no such model"}
      if config.pipeline_steps:
        with tempfile.TemporaryDirectory() as workdir:
          piped = {"pipeline": _ours(name, "fused", config, policy, use_jit,
                                     _pipeline_dataset(config, workdir)),
                   "synthetic": variants["ours"]}
          real, waits = _interleaved_rates(piped, dataclasses.replace(
              config, steps=config.pipeline_steps))
        entry["with_input_pipeline"] = {
            "images_per_sec": round(real["pipeline"], 2),
            "input_wait_fraction": round(waits["pipeline"], 4),
            "vs_synthetic_input": _ratio(real["pipeline"], real["synthetic"])}
      results.append(entry)
  report = {
      "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "output_json"},
      "precision": policy, "precision_reason": why, "jit_compile": use_jit, "jit_reason": jit_why,
      "machine": machine_description(), "device": sampler.summary(), "results": results,
  }
  if config.output_json:
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2, default=lambda o: None if o is np.nan else str(o))
  return report
