"""TF Model Garden's image-classification trainer as a throughput contender (a script).

Runs in Model Garden's own environment (tf-models-official pins its TensorFlow and
tf_keras), so it imports nothing from this project: `engine.bench.throughput` starts it
with that environment's python and drives it over stdin/stdout, one line each way:

  -> {"ready": true, "trainable_params": ...}   after building and `--warmup_steps` steps
  <- N                                          run N training steps
  -> {"seconds": S}                             their wall time

What runs is Model Garden's own stack end to end: the `resnet_imagenet` experiment config,
`ImageClassificationTask.build_model` (its ResNet, no conv biases, fused BN) and
`train_step`, the optimizer its config factory builds (Adam, constant rate 1e-4 here, like
the other contenders), and `base_trainer.Trainer` (Orbit, `tf.while_loop` over steps),
fed the same synthetic in-memory batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import tensorflow as tf
import tf_keras
from official.core import base_trainer, exp_factory, train_utils
from official.modeling import performance
from official.vision import registry_imports  # noqa: F401  (registers the experiments)
from official.vision.tasks import image_classification

_PRECISION = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def _config(args):
  config = exp_factory.get_exp_config("resnet_imagenet")
  config.task.model.num_classes = 2  # binary attribute: a 2-way softmax, one_hot labels
  config.task.model.input_size = [args.image_size, args.image_size, 3]
  config.task.model.backbone.resnet.model_id = args.depth
  config.task.train_data.global_batch_size = args.batch_size
  config.runtime.mixed_precision_dtype = _PRECISION[args.precision]
  config.trainer.optimizer_config.optimizer.type = "adam"
  config.trainer.optimizer_config.learning_rate.type = "constant"
  config.trainer.optimizer_config.learning_rate.constant.learning_rate = 1e-4
  config.trainer.optimizer_config.warmup.type = None
  config.trainer.train_tf_while_loop = True
  return config


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--depth", type=int, default=50)
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--precision", default="mixed_bfloat16", choices=sorted(_PRECISION))
  parser.add_argument("--warmup_steps", type=int, default=2)
  args = parser.parse_args()
  config = _config(args)
  performance.set_mixed_precision_policy(config.runtime.mixed_precision_dtype)
  task = image_classification.ImageClassificationTask(config.task)
  model = task.build_model()
  optimizer = train_utils.create_optimizer(task, config)
  images = tf.random.stateless_uniform(
      [args.batch_size, args.image_size, args.image_size, 3], [1, 2], 0, 255)
  labels = tf.cast(tf.random.stateless_uniform([args.batch_size], [3, 4]) < 0.5, tf.int32)
  dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  trainer = base_trainer.Trainer(config, task, model, optimizer, train=True, evaluate=False,
                                 train_dataset=dataset)
  trainer.train(tf.constant(args.warmup_steps, tf.int32))
  print(json.dumps({"ready": True, "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
                    "trainable_params": int(sum(tf.size(v) for v in model.trainable_variables))}),
        flush=True)
  for line in sys.stdin:
    steps = int(line)
    start = time.perf_counter()
    trainer.train(tf.constant(steps, tf.int32))
    float(trainer.train_loss.result())  # the loop has finished its last step
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
  main()
