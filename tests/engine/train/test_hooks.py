"""The small hooks, each on its own."""

from __future__ import annotations

import pytest
import tensorflow as tf

from engine.train import hooks


def test_early_stopping_counts_evaluations_without_improvement():
  stop = hooks.EarlyStopping(patience=2, mode="max")
  assert [stop.update(v) for v in (0.5, 0.6, 0.6, 0.55)] == [False, False, False, True]
  restored = hooks.EarlyStopping(patience=2, mode="max")
  restored.load_state(stop.state())
  assert restored.best == 0.6 and restored.bad_evals == 2


def test_early_stopping_minimises_losses_and_zero_patience_never_stops():
  stop = hooks.EarlyStopping(patience=0, mode="min")
  assert not any(stop.update(v) for v in (1.0, 2.0, 3.0, 4.0))
  assert stop.best == 1.0


def test_plateau_lowers_the_rate_scale_after_patience():
  scale = tf.Variable(1.0)
  plateau = hooks.PlateauLR(scale, patience=2, factor=0.5, mode="min")
  lowered = [plateau.update(v) for v in (1.0, 1.0, 1.0, 0.5, 0.6, 0.7)]
  assert lowered == [False, False, True, False, False, True]
  assert float(scale.numpy()) == pytest.approx(0.25)


def test_best_exporter_keeps_the_first_best():
  best = hooks.BestExporter("max")
  assert [best.update(v, s) for s, v in ((1, 0.7), (2, 0.9), (3, 0.9), (4, 0.8))] == \
      [True, True, False, False]
  assert best.state() == {"best": 0.9, "best_step": 2}


def test_non_finite_guard_names_the_step_and_the_last_good_checkpoint():
  hooks.check_finite(-1, 100, "run/checkpoints/ckpt-100")
  with pytest.raises(hooks.NonFiniteLossError, match="step 104.*ckpt-100"):
    hooks.check_finite(3, 100, "run/checkpoints/ckpt-100")
  with pytest.raises(hooks.NonFiniteLossError, match="none was written yet"):
    hooks.check_finite(0, 0, None)


def test_throughput_meter_reports_rates():
  meter = hooks.ThroughputMeter(global_batch_size=32)
  rates = meter.lap(steps=10, remaining_steps=20)
  assert rates["images_per_sec"] > 0 and rates["eta_sec"] == pytest.approx(
      2 * rates["step_time_ms"] * 10 / 1000)
