"""What is trained: labels -> loss and accuracy for the three tasks, and the per-replica steps.

Kept apart from how it is trained (loop.py): the steps here are small pure functions,
compiled once (optionally with XLA), returning sums that the loop reduces over replicas.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from engine.models.builder import variables_by_name


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """The task's shape: `kind` from InputConfig.task, `num_outputs` of the model."""

  kind: str                       # attribute | identity | attributes
  num_outputs: int
  label_smoothing: float = 0.0
  class_weights: tuple[float, ...] | None = None


def per_example_loss(spec: TaskSpec, labels, logits):
  """float32 loss per example (logits are float32 whatever the compute dtype)."""
  logits = tf.cast(logits, tf.float32)
  smooth = spec.label_smoothing
  if spec.kind == "identity":
    onehot = tf.one_hot(labels, spec.num_outputs)
    if smooth:
      onehot = onehot * (1.0 - smooth) + smooth / spec.num_outputs
    return tf.nn.softmax_cross_entropy_with_logits(onehot, logits)
  targets = tf.cast(labels, tf.float32)
  if spec.kind == "attribute":
    logits = logits[:, 0]
  if smooth:
    targets = targets * (1.0 - smooth) + 0.5 * smooth
  loss = tf.nn.sigmoid_cross_entropy_with_logits(targets, logits)
  return tf.reduce_mean(loss, axis=-1) if spec.kind == "attributes" else loss


def per_example_correct(spec: TaskSpec, labels, logits):
  """1.0 per correctly classified example (the mean over attributes for multi-label)."""
  logits = tf.cast(logits, tf.float32)
  if spec.kind == "identity":
    return tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
  if spec.kind == "attribute":
    return tf.cast(tf.equal(tf.cast(logits[:, 0] > 0, tf.int32), labels), tf.float32)
  return tf.reduce_mean(tf.cast(tf.equal(tf.cast(logits > 0, tf.float32), labels), tf.float32), -1)


def example_weights(spec: TaskSpec, labels):
  if spec.class_weights is None or spec.kind == "attributes":
    return tf.ones(tf.shape(labels)[:1], tf.float32)
  return tf.gather(tf.constant(spec.class_weights, tf.float32), labels)


def make_train_step(spec: TaskSpec, model: keras.Model, optimizer, global_batch_size: int,
                    ema=None):
  """Returns the per-replica step (images, labels) -> dict of float32 sums.

  The loss is divided by the GLOBAL batch, so that the sum over replicas of the
  gradients (Keras all-reduces with SUM) is the gradient of the global mean loss.
  """
  variables = model.trainable_variables
  loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

  def step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      losses = per_example_loss(spec, labels, logits)
      loss = tf.reduce_sum(losses * example_weights(spec, labels)) / global_batch_size
      if model.losses:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss += tf.add_n([tf.cast(l, tf.float32) for l in model.losses]) / replicas
      scaled = optimizer.scale_loss(loss) if loss_scaled else loss
    grads = tape.gradient(scaled, variables)
    optimizer.apply(grads, variables)
    if ema is not None:
      ema.update(optimizer.iterations)
    return {"loss_sum": tf.reduce_sum(losses),
            "correct": tf.reduce_sum(per_example_correct(spec, labels, logits)),
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
