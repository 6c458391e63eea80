"""Adam and AdamW whose per-variable update is one fused kernel (`ResourceApplyAdam`).

Keras 3's Adam writes each variable's update as ~20 element-wise ops (two slot updates,
sqrt, divide, the step's powers...): for ResNet50's 161 variables ~3,400 small ops per step,
10% of a CPU step in issue 17's profile. TensorFlow's `ResourceApplyAdam` (what tf_keras'
legacy Adam ran) does the same arithmetic in one kernel per variable:

  lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
  m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
  w -= lr_t * m / (sqrt(v) + epsilon)

which is Keras' `Adam.update_step` term for term (epsilon outside the square root). It has
CPU, GPU and XLA kernels, so it is used on every device. Everything else is Keras' own:
slots (same names and order, so checkpoints of either load into the other), AdamW's
decoupled weight decay (applied by Keras before `update_step`), clipping, gradient
accumulation, loss scaling. AMSGrad and sparse gradients fall back to Keras' update.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _handle(variable):
  return (variable.value if isinstance(variable, keras.Variable) else variable).handle


class _FusedAdamUpdate:
  """Mixin: Keras Adam's `update_step`, as one `ResourceApplyAdam` per variable."""

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    index = self._get_variable_index(variable)
    local_step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=_handle(variable), m=_handle(self._momentums[index]),
        v=_handle(self._velocities[index]), beta1_power=tf.pow(beta_1, local_step),
        beta2_power=tf.pow(beta_2, local_step), lr=tf.cast(learning_rate, dtype),
        beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
        grad=tf.cast(gradient, dtype), use_locking=False, use_nesterov=False)


@keras.saving.register_keras_serializable(package="facetrain")
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
  """`keras.optimizers.Adam` with the fused update."""

  def __init__(self, *args, name="adam", **kwargs):
    super().__init__(*args, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="facetrain")
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
  """`keras.optimizers.AdamW` (decoupled weight decay) with the fused update."""

  def __init__(self, *args, name="adam_w", **kwargs):
    super().__init__(*args, name=name, **kwargs)
