"""Training throughput: one compiled train step, images/s, variants side by side.

For each backbone (synthetic in-memory input, so only compute is measured):
  fused      our model (FusedBatchNorm)
  keras_bn   the same model with stock Keras 3 BatchNormalization
  tf_keras   tf_keras (Keras 2) applications model of the same architecture, where one exists
All run the same step: forward, BCE-with-logits loss, gradients, Adam update, inside one
tf.function (no XLA: it cannot compile every op here on CPU, and Keras' fit default is off).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time

import keras
import tensorflow as tf

from engine.models import ModelConfig, build_model

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
  precision: str = "float32"        # float32 | mixed_bfloat16 | mixed_float16
  warmup_steps: int = 2
  steps: int = 6
  output_json: str | None = None


def _step_rate(model, optimizer, config: ThroughputConfig) -> float:
  images = tf.random.uniform([config.batch_size, *config.image_size, 3], 0, 255)
  labels = tf.cast(tf.random.uniform([config.batch_size]) < 0.5, tf.float32)
  variables = model.trainable_variables

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      logits = tf.cast(model(x, training=True), tf.float32)[:, 0]
      loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  for _ in range(config.warmup_steps):
    step(images, labels).numpy()
  start = time.perf_counter()
  for _ in range(config.steps):
    loss = step(images, labels)
  loss.numpy()  # wait for the last step
  return config.steps * config.batch_size / (time.perf_counter() - start)


def _ours(name: str, batch_norm: str, config: ThroughputConfig) -> float:
  keras.config.set_dtype_policy(config.precision)
  try:
    model = build_model(ModelConfig(name, image_size=config.image_size, batch_norm=batch_norm))
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    return _step_rate(model, optimizer, config)
  finally:
    keras.config.set_dtype_policy("float32")


def _tf_keras(name: str, config: ThroughputConfig) -> float | None:
  if name not in TF_KERAS_APPS:
    return None
  import tf_keras  # the `bench` extra

  tf_keras.mixed_precision.set_global_policy(config.precision)
  try:
    base = getattr(tf_keras.applications, TF_KERAS_APPS[name])(
        include_top=False, weights=None, input_shape=(*config.image_size, 3), pooling="avg")
    outputs = tf_keras.layers.Dense(1, dtype="float32")(base.output)
    model = tf_keras.Model(base.input, outputs)
    optimizer = tf_keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    return _step_rate(model, optimizer, config)
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")


def run_throughput_benchmark(config: ThroughputConfig) -> dict:
  results = []
  for name in config.backbones:
    rates = {"fused": _ours(name, "fused", config), "keras_bn": _ours(name, "keras", config),
             "tf_keras": _tf_keras(name, config)}
    results.append({
        "backbone": name,
        "images_per_sec": {k: (round(v, 2) if v is not None else None) for k, v in rates.items()},
        "fused_vs_keras_bn": round(rates["fused"] / rates["keras_bn"], 3),
        "fused_vs_tf_keras": (round(rates["fused"] / rates["tf_keras"], 3)
                              if rates["tf_keras"] else None),
        "tf_keras_note": None if rates["tf_keras"] else "tf_keras.applications has no such model",
    })
  report = {
      "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "output_json"},
      "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                  "tensorflow": tf.__version__, "keras": keras.__version__,
                  "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]},
      "results": results,
  }
  if config.output_json:
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2)
  return report
