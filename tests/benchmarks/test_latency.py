"""The latency benchmark runs at a tiny size and reports its baselines."""

import csv
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from engine.bench import latency
from engine.bench.latency import LatencyConfig, run_latency_benchmark

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
_TINY = {"backbones": ("tiny_resnet",), "image_size": (32, 32), "batch_size": 4,
         "iterations": 3, "warmup": 1, "throughput_batches": 1, "throughput_warmup": 1,
         "matmul_size": 256}


def test_reports_latency_throughput_and_baselines(tmp_path):
  out_json, out_csv = tmp_path / "l.json", tmp_path / "l.csv"
  report = run_latency_benchmark(LatencyConfig(
      **_TINY, precisions=("float32", "auto"), xla=(False, True),
      output_json=str(out_json), output_csv=str(out_csv)))
  assert json.loads(out_json.read_text()) == json.loads(json.dumps(report))
  results = report["results"]
  assert len(results) == 2 * len(report["precisions"])  # xla off and on per precision
  with open(out_csv) as f:
    lines = list(csv.DictReader(f))
  assert len(lines) == len(results)
  assert lines[0]["backbone"] == "tiny_resnet" and float(lines[0]["latency_ms.p50"]) > 0
  assert report["matmul_peak_gflops"]["float32"] > 0
  for r in results:
    assert r["flop_floor_ms"] > 0 and r["flops"] > 0 and r["predict_p50_ms"] > 0
    assert r["device"]["host/rss_mb_peak"] > 0
    assert r["device"]["gpu_available"] or r["device"]["gpu_unavailable_reason"]
    if r["error"]:  # only XLA may fail, and then says why
      assert r["xla"] and r["error"].startswith("XLA failed")
      continue
    ms = r["latency_ms"]
    assert 0 < ms["min"] <= ms["p50"] <= ms["p90"] <= ms["p99"]
    assert r["images_per_sec"] > 0
    assert r["vs_flop_floor"] == pytest.approx(ms["p50"] / r["flop_floor_ms"], rel=1e-3)
    assert r["speedup_vs_predict"] == pytest.approx(r["predict_p50_ms"] / ms["p50"], rel=1e-3)
  assert report["machine"]["tensorflow"] == tf.__version__


def test_auto_resolving_to_float32_is_measured_once(monkeypatch):
  monkeypatch.setattr(latency, "resolve_precision",
                      lambda p: ("float32", "requested" if p == "float32" else "no fast bf16"))
  policies, notes = latency.resolve_policies(("float32", "auto"))
  assert [p["policy"] for p in policies] == ["float32"]
  assert len(notes) == 1
  assert "'auto' resolves to float32" in notes[0] and "measured once" in notes[0]


def test_xla_failure_is_recorded_not_raised(monkeypatch):
  compiled = latency._compiled

  def failing_xla(model, spec, xla, freeze):
    if xla:
      raise tf.errors.InvalidArgumentError(None, None, "Detected unsupported operations")
    return compiled(model, spec, xla, freeze)

  monkeypatch.setattr(latency, "_compiled", failing_xla)
  report = run_latency_benchmark(LatencyConfig(**_TINY, precisions=("float32",), xla=(False, True)))
  off, on = report["results"]
  assert off["error"] is None and off["speedup_vs_predict"] > 0
  assert "Detected unsupported operations" in on["error"] and on["vs_flop_floor"] is None
  assert on["predict_p50_ms"] > 0 and on["flop_floor_ms"] > 0  # the baselines still stand
  assert "XLA failed" in latency.format_table(report)


def test_entry_point_prints_table_and_writes_json(tmp_path):
  out = tmp_path / "l.json"
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.latency", "--backbones=tiny_resnet", "--image_size=32",
       "--iterations=3", "--warmup=1", "--batch_size=4", "--throughput_batches=1",
       f"--output_json={out}"], capture_output=True, text=True, cwd=_REPO, timeout=300)
  assert result.returncode == 0, result.stderr
  report = json.loads(out.read_text())
  assert {r["backbone"] for r in report["results"]} == {"tiny_resnet"}
  assert {r["xla"] for r in report["results"]} == {False, True}
  assert "tiny_resnet" in result.stdout and "p50" in result.stdout
