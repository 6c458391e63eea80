"""What is trained: the task's loss and accuracy in the per-replica step, and the EMA.

Kept apart from how it is trained (loop.py): the steps here are small pure functions,
compiled once (optionally with XLA), returning sums that the loop reduces over replicas.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from engine.models.builder import variables_by_name
from engine.tasks import Task


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What the step optimises: the task (engine.tasks) at the model's number of outputs."""

  task: Task
  num_outputs: int
  label_smoothing: float = 0.0
  class_weights: tuple[float, ...] | None = None

  def per_example_loss(self, labels, logits):
    """float32 loss per example (logits are float32 whatever the compute dtype)."""
    return self.task.per_example_loss(labels, tf.cast(logits, tf.float32), self.num_outputs,
                                      self.label_smoothing)

  def per_example_correct(self, labels, logits):
    return self.task.per_example_correct(labels, tf.cast(logits, tf.float32))

  def example_weights(self, labels):
    return self.task.example_weights(labels, self.class_weights)


def make_train_step(spec: TaskSpec, model: keras.Model, optimizer, global_batch_size: int,
                    ema=None, augment=None):
  """Returns the per-replica step (images, labels) -> dict of float32 sums.

  The loss is divided by the GLOBAL batch, so that the sum over replicas of the
  gradients (Keras all-reduces with SUM) is the gradient of the global mean loss.
  `augment` (device augmentation, engine/data/device_augment.py) turns what the pipeline
  sent, (pixels, augment_params), into the model's input before anything else.
  """
  variables = model.trainable_variables
  loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

  def step(images, labels):
    if augment is not None:
      images = augment(images)
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      losses = spec.per_example_loss(labels, logits)
      loss = tf.reduce_sum(losses * spec.example_weights(labels)) / global_batch_size
      if model.losses:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss += tf.add_n([tf.cast(l, tf.float32) for l in model.losses]) / replicas
      scaled = optimizer.scale_loss(loss) if loss_scaled else loss
    grads = tape.gradient(scaled, variables)
    optimizer.apply(grads, variables)
    if ema is not None:
      ema.update(optimizer.iterations)
    return {"loss_sum": tf.reduce_sum(losses),
            "correct": tf.reduce_sum(spec.per_example_correct(labels, logits)),
            "count": tf.cast(tf.shape(losses)[0], tf.float32)}

  return step


class WeightAverage:
  """Exponential moving average of the trainable weights (evaluated and exported).

  The decay warms up as min(decay, (1 + t) / (10 + t)) so short runs are not dominated
  by the random initialisation.
  """

  def __init__(self, model: keras.Model, decay: float):
    self.decay = decay
    self.sources = list(model.trainable_variables)
    name_of = {id(v): name for name, v in variables_by_name(model).items()}
    self.names = [name_of[id(v)] for v in self.sources]
    # ONLY_FIRST_REPLICA: every replica holds the same weights after the all-reduce.
    self.shadows = [tf.Variable(v.value, trainable=False, name=f"ema_{i}",
                                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                    for i, v in enumerate(self.sources)]

  def shadows_by_name(self) -> dict[str, tf.Variable]:
    """Each average under the name of the model variable it averages (how it is saved)."""
    return dict(zip(self.names, self.shadows))

  def update(self, step):
    t = tf.cast(step, tf.float32)
    decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
    for shadow, source in zip(self.shadows, self.sources):
      shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(source.value, shadow.dtype))

  def swap(self):
    """Exchanges model weights and averages (call twice to undo)."""
    for shadow, source in zip(self.shadows, self.sources):
      current = tf.identity(source.value)
      source.assign(shadow)
      shadow.assign(current)
