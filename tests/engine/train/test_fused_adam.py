import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.train.fused_adam import FusedAdam, FusedAdamW

# Both compute the same float32 expressions in another order: a few ulps (of values ~1,
# float32 eps 1.2e-7) apart after 5 steps.
RTOL, ATOL = 1e-6, 1e-6


def _variables():
  rng = np.random.default_rng(0)
  return [keras.Variable(rng.normal(size=shape).astype("float32"), name=f"w{i}")
          for i, shape in enumerate([(3, 4), (4,), (2, 2, 3, 5)])]


def _gradients(step):
  rng = np.random.default_rng(step + 10)
  return [tf.constant(rng.normal(size=shape).astype("float32"))
          for shape in [(3, 4), (4,), (2, 2, 3, 5)]]


def _run(optimizer, steps, jit_compile=False, loss_scale=False):
  variables = _variables()
  optimizer.build(variables)
  if hasattr(optimizer, "exclude_from_weight_decay"):
    optimizer.exclude_from_weight_decay(var_list=[variables[1]])

  @tf.function(jit_compile=jit_compile)
  def apply(grads):
    if loss_scale:  # what the train step hands a LossScaleOptimizer: scaled gradients
      grads = [g * optimizer.dynamic_scale for g in grads]
    optimizer.apply(grads, variables)

  for step in range(steps):
    apply(_gradients(step))
  return [v.numpy() for v in variables], [v.numpy() for v in optimizer.variables]


SCHEDULE = keras.optimizers.schedules.CosineDecay(1e-2, 10)


@pytest.mark.parametrize("fused,stock", [
    (lambda: FusedAdam(SCHEDULE), lambda: keras.optimizers.Adam(SCHEDULE)),
    (lambda: FusedAdam(1e-2, weight_decay=0.1, global_clipnorm=1.0),
     lambda: keras.optimizers.Adam(1e-2, weight_decay=0.1, global_clipnorm=1.0)),
    (lambda: FusedAdamW(SCHEDULE, weight_decay=0.05), lambda: keras.optimizers.AdamW(SCHEDULE, weight_decay=0.05)),
    (lambda: keras.optimizers.LossScaleOptimizer(FusedAdamW(1e-2, weight_decay=0.05)),
     lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.AdamW(1e-2, weight_decay=0.05))),
])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_updates_equal_keras_over_several_steps(fused, stock, jit_compile):
  loss_scale = "LossScale" in type(fused()).__name__
  ours_vars, ours_slots = _run(fused(), 5, jit_compile, loss_scale)
  keras_vars, keras_slots = _run(stock(), 5, jit_compile, loss_scale)
  moved = [np.max(np.abs(v - w)) for v, w in zip(keras_vars, [v.numpy() for v in _variables()])]
  assert min(moved) > 1e-3  # the comparison is not between untouched variables
  for ours, theirs in zip(ours_vars + ours_slots, keras_vars + keras_slots):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


def test_slots_are_keras_own_so_checkpoints_interchange():
  variables = _variables()
  ours, theirs = FusedAdamW(1e-3), keras.optimizers.AdamW(1e-3)
  ours.build(variables)
  theirs.build(variables)
  # Keras numbers optimizer names per process (adam_w, adam_w_1); the rest must agree.
  assert ours.name == "adam_w"
  assert [v.path.split("/", 1)[1] for v in ours.variables] == \
      [v.path.split("/", 1)[1] for v in theirs.variables]
  assert [v.shape for v in ours.variables] == [v.shape for v in theirs.variables]
