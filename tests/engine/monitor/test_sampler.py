"""DeviceSampler samples the host always, NVML GPUs where a driver answers, and says why not."""

import logging
import time

import numpy as np
import pynvml
import pytest

from engine.monitor import DeviceSampler, machine_description, sampler as sampler_lib


def _busy(seconds: float) -> None:
  a = np.random.default_rng(0).random((256, 256))
  end = time.monotonic() + seconds
  while time.monotonic() < end:
    a = np.tanh(a @ a)


@pytest.fixture
def no_nvml(monkeypatch):
  """NVML that fails as it does without a driver; the log-once memory starts empty."""
  def fail():
    raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
  monkeypatch.setattr(pynvml, "nvmlInit", fail)
  monkeypatch.setattr(sampler_lib, "_LOGGED_REASONS", set())


def test_samples_host_metrics_while_running_and_stops(no_nvml):
  sampler = DeviceSampler(interval_s=0.05)
  assert sampler.latest() == {}
  with sampler:
    assert sampler.latest()["host/rss_mb"] > 0  # a first sample at start
    _busy(0.4)
  summary = sampler.summary()
  assert summary["num_samples"] >= 4
  assert summary["window_s"] >= 0.4
  for key in ("host/cpu_pct_mean", "host/cpu_pct_peak", "host/process_cpu_pct_mean",
              "host/rss_mb_mean", "host/rss_mb_peak"):
    assert summary[key] > 0, key
  assert summary["host/rss_mb_peak"] >= summary["host/rss_mb_mean"]
  latest = sampler.latest()
  assert {"host/cpu_pct", "host/process_cpu_pct", "host/rss_mb"} <= set(latest)
  time.sleep(0.15)  # stopped: no more samples
  assert sampler.summary()["num_samples"] == summary["num_samples"]
  sampler.stop()  # twice is fine


def test_without_nvml_reports_why_and_logs_it_once(no_nvml, caplog):
  caplog.set_level(logging.INFO)
  for _ in range(2):
    with DeviceSampler(interval_s=0.05) as sampler:
      time.sleep(0.06)
    summary = sampler.summary()
    assert summary["gpu_available"] is False and summary["num_gpus"] == 0
    assert "Driver Not Loaded" in summary["gpu_unavailable_reason"]
    assert not any(k.startswith("gpu0/") for k in summary)
    assert summary["host/rss_mb_peak"] > 0
  assert sum("NVML unavailable" in r.getMessage() for r in caplog.records) == 1


def test_gpu_metrics_means_peaks_and_energy_delta(monkeypatch):
  """A fake one-GPU NVML: utilisation and memory rise, power is unsupported."""
  calls = {"n": 0}

  def reading(value):
    calls["n"] += 1
    return value

  monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
  monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
  monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 1)
  monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: f"handle{i}")
  monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates",
                      lambda h: type("U", (), {"gpu": reading(10 * calls["n"])}))
  monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: type("M", (), {"used": 2**30}))
  def unsupported(*args):
    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
  monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", unsupported)
  monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", lambda h, s: 50)
  monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption",
                      lambda h: 1_000_000 + 500 * calls["n"])  # millijoules
  with DeviceSampler(interval_s=0.02) as sampler:
    time.sleep(0.1)
  summary = sampler.summary()
  assert summary["gpu_available"] is True and summary["gpu_unavailable_reason"] is None
  assert summary["gpu0/memory_used_mb_peak"] == 1024.0
  assert summary["gpu0/temperature_c_mean"] == 50.0
  assert summary["gpu0/utilization_pct_peak"] >= summary["gpu0/utilization_pct_mean"] > 0
  assert summary["gpu0/power_w_mean"] is None and summary["gpu0/power_w_peak"] is None
  n = summary["num_samples"]
  assert summary["gpu0/energy_j"] == pytest.approx(0.5 * (n - 1))
  assert sampler.latest()["gpu0/power_w"] is None


def test_start_twice_fails():
  with DeviceSampler() as sampler:
    with pytest.raises(RuntimeError, match="already started"):
      sampler.start()


def test_machine_description_names_the_hardware_and_software():
  machine = machine_description()
  assert machine["cpu"] and machine["cores"] >= 1 and machine["usable_cores"] >= 1
  assert machine["ram_gb"] > 0
  assert isinstance(machine["gpus"], list)
  assert machine["gpus"] or machine["nvml_unavailable_reason"] or machine["gpu_source"] == "nvml"
  assert machine["tensorflow"] and machine["keras"] and machine["python"]
