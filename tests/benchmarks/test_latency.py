"""The latency benchmark runs every path at a tiny size and reports its baselines."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from engine.bench import latency, runtimes
from engine.bench.latency import LatencyConfig, run_latency_benchmark
from tests.engine.eval.test_predict import write_run_dir

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
_TINY = {"backbones": ("tiny_resnet",), "image_size": (32, 32), "batch_size": 4,
         "iterations": 2, "rounds": 2, "warmup": 1, "throughput_batches": 1,
         "throughput_warmup": 1, "matmul_size": 256}
_ROW_KEYS = {"backbone", "image_size", "runtime", "precision", "xla", "frozen", "batch_size",
             "params", "flops", "error", "accuracy", "max_abs_logit_difference",
             "flop_floor_ms", "vs_flop_floor", "predict_p50_ms", "speedup_vs_predict"}
_DEPLOY = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def _check_schema(report):
  assert report["matmul_peak_gflops"]["float32"] > 0
  assert report["machine"]["tensorflow"] == tf.__version__
  for r in report["results"]:
    assert _ROW_KEYS <= set(r), _ROW_KEYS - set(r)
    assert r["runtime"] in runtimes.RUNTIMES
    assert r["predict_p50_ms"] > 0
    assert (r["flop_floor_ms"] is None) == (r["precision"] == "int8")  # no int8 peak
    if "latency_ms" not in r:  # only XLA or a missing runtime may fail, and then say why
      assert r["error"].startswith(("XLA failed", "not installed"))
      continue
    ms = r["latency_ms"]
    assert 0 < ms["min"] <= ms["p50"] <= ms["p90"] <= ms["p99"]
    if r["precision"] == "int8":
      continue
    # each row's floor is its own precision's
    peak = report["matmul_peak_gflops"][r["precision"]]
    flops = next(x["flops"] for x in report["results"] if x["flops"])
    # both sides are rounded for the report (the floor to 4 digits, the peak to 0.1 GFLOP/s)
    assert r["flop_floor_ms"] == pytest.approx(flops / peak / 1e6, rel=1e-2)
    assert r["vs_flop_floor"] == pytest.approx(ms["p50"] / r["flop_floor_ms"], rel=1e-3)
    assert r["speedup_vs_predict"] == pytest.approx(r["predict_p50_ms"] / ms["p50"], rel=1e-3)
    if r["runtime"] != "predict":
      assert r["images_per_sec"] > 0 and r["device"]["host/rss_mb_peak"] > 0
      assert r["device"]["gpu_available"] or r["device"]["gpu_unavailable_reason"]
      assert r["max_abs_logit_difference"] is not None


@pytest.mark.slow  # every runtime, with exports: ~20 s
def test_reports_every_path_with_its_own_floor(tmp_path):
  out_json, out_csv = tmp_path / "l.json", tmp_path / "l.csv"
  report = run_latency_benchmark(LatencyConfig(
      **_TINY, precisions=("float32", "mixed_bfloat16"), xla=(False, True),
      output_json=str(out_json), output_csv=str(out_csv)))
  assert json.loads(out_json.read_text()) == json.loads(json.dumps(report))
  _check_schema(report)
  rows = {(r["runtime"], r["precision"], r["xla"]) for r in report["results"]}
  expected = {("tensorflow", p, x) for p in ("float32", "bfloat16") for x in (False, True)}
  expected |= {("tflite", "float32", None), ("onnxruntime", "float32", None),
               ("openvino", "float32", None), ("openvino", "bfloat16", None),
               ("predict", "float32", False), ("predict", "bfloat16", False)}
  assert rows == expected
  for r in report["results"]:
    if r["runtime"] in _DEPLOY and not importlib.util.find_spec(_DEPLOY[r["runtime"]]):
      assert r["error"].startswith("not installed") and "deploy" in r["error"]
  assert report["matmul_peak_gflops"]["bfloat16"] > 0
  with open(out_csv) as f:
    lines = list(csv.DictReader(f))
  assert len(lines) == len(report["results"]) and float(lines[0]["latency_ms.p50"]) > 0
  assert any("accuracy needs a trained run" in n for n in report["notes"])
  assert {f["backbone"] for f in report["fastest"]} == {"tiny_resnet"}


def test_trained_run_reports_accuracy_per_path(celeba_shards, tmp_path):
  """Each path's accuracy on the validation split; OpenVINO int8 is calibrated on training
  images (the synthetic set has 96: all of them)."""
  run_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards)
  report = run_latency_benchmark(LatencyConfig(
      **{**_TINY, "backbones": None, "image_size": None}, precisions=("float32",),
      xla=(False,), runtimes=("predict", "tensorflow", "tflite", "openvino"), model_dir=run_dir))
  _check_schema(report)
  rows = {(r["runtime"], r["precision"]): r for r in report["results"]}
  assert set(rows) >= {("predict", "float32"), ("tensorflow", "float32"), ("tflite", "float32"),
                       ("openvino", "float32")}
  reference = rows["tensorflow", "float32"]
  assert 0 <= reference["accuracy"] <= 1 and reference["image_size"] == [32, 32]
  # the same weights through TFLite: the same answers on the validation split
  assert rows["tflite", "float32"]["accuracy"] == reference["accuracy"]
  if importlib.util.find_spec("nncf") and importlib.util.find_spec("openvino"):
    assert 0 <= rows["openvino", "int8"]["accuracy"] <= 1
    assert any("int8: calibrated" in n for n in report["notes"])
  elif importlib.util.find_spec("openvino"):  # the deploy extra without nncf
    assert rows["openvino", "int8"]["error"].startswith("not installed")


def test_auto_resolving_to_float32_is_measured_once(monkeypatch):
  monkeypatch.setattr(latency, "resolve_precision",
                      lambda p: ("float32", "requested" if p == "float32" else "no fast bf16"))
  policies, notes = latency.resolve_policies(("float32", "auto"))
  assert [p["policy"] for p in policies] == ["float32"]
  assert len(notes) == 1
  assert "'auto' resolves to float32" in notes[0] and "measured once" in notes[0]


def test_xla_failure_is_recorded_not_raised(monkeypatch):
  compiled = runtimes.compiled_call

  def failing_xla(model, spec, xla, freeze):
    if xla:
      raise tf.errors.InvalidArgumentError(None, None, "Detected unsupported operations")
    return compiled(model, spec, xla, freeze)

  monkeypatch.setattr(runtimes, "compiled_call", failing_xla)
  report = run_latency_benchmark(LatencyConfig(
      **_TINY, precisions=("float32",), xla=(False, True), runtimes=("predict", "tensorflow")))
  off, on, _ = report["results"]
  assert off["error"] is None and off["speedup_vs_predict"] > 0
  assert "Detected unsupported operations" in on["error"] and on["vs_flop_floor"] is None
  assert on["predict_p50_ms"] > 0 and on["flop_floor_ms"] > 0  # the baselines still stand
  assert "XLA failed" in latency.format_table(report)


def test_unknown_runtime_is_refused():
  with pytest.raises(ValueError, match="unknown runtimes \\['tensorrt'\\]"):
    LatencyConfig(runtimes=("tensorrt",)).validate()


def test_entry_point_prints_table_and_writes_json(tmp_path):
  out = tmp_path / "l.json"
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.latency", "--backbones=tiny_resnet", "--image_size=32",
       "--iterations=2", "--rounds=1", "--warmup=1", "--batch_size=4", "--throughput_batches=1",
       "--runtimes=predict,tensorflow,onnxruntime", "--xla=off", f"--output_json={out}"],
      capture_output=True, text=True, cwd=_REPO, timeout=300)
  assert result.returncode == 0, result.stderr
  report = json.loads(out.read_text())
  assert {r["backbone"] for r in report["results"]} == {"tiny_resnet"}
  assert {r["runtime"] for r in report["results"]} == {"predict", "tensorflow", "onnxruntime"}
  assert "tiny_resnet" in result.stdout and "p50" in result.stdout and "xfloor" in result.stdout
