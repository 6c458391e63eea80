"""The per-layer weight-gradient benchmark times every distinct conv shape against stock."""

import pytest

from engine.bench.conv_weight_grads import ConvGradConfig, run_conv_grad_benchmark


def test_every_conv_shape_is_timed_against_the_stock_kernel():
  report = run_conv_grad_benchmark(ConvGradConfig(
      "tiny_resnet", (32, 32), batch_size=2, dtype="float32", repeats=1, rounds=1, chunks=(1, 2)))
  layers = report["layers"]
  # tiny_resnet: 7x7 stem, 3x3 convs at 8x8 and 4x4 (stride 1 and 2), a 1x1 projection.
  assert {tuple(r["kernel"][:2]) for r in layers} == {(7, 7), (3, 3), (1, 1)}
  assert len({(tuple(r["input"]), tuple(r["kernel"]), tuple(r["strides"])) for r in layers}) \
      == len(layers)
  for row in layers:
    assert set(row["ms"]) == {"stock", "matmul_1", "matmul_2"} and min(row["ms"].values()) > 0
    # (ms are rounded to 1 us in the report)
    assert row["speedup"]["matmul_1"] == pytest.approx(
        row["ms"]["stock"] / row["ms"]["matmul_1"], rel=0.05)
