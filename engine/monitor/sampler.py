"""DeviceSampler: GPU (NVML) and host (psutil) metrics on a background thread.

Every sample holds flat keys: per GPU `gpu{i}/utilization_pct`, `gpu{i}/memory_used_mb`,
`gpu{i}/power_w`, `gpu{i}/temperature_c`, `gpu{i}/total_energy_j` (the driver's running
counter) and, always, `host/cpu_pct` (all cores, 0-100), `host/process_cpu_pct` (this
process, 100 = one full core, so up to 100 x cores) and `host/rss_mb` (this process).
A field the device does not support is None. Without NVML (no driver, no library) the
sampler records why in `gpu_unavailable_reason`, logs it once per process and reason,
and keeps sampling the host.

`host/cpu_pct` well above `host/process_cpu_pct / cores` means other processes shared
the cores during the window: worth knowing before trusting a latency number.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psutil
import pynvml

# Reasons already logged: a benchmark makes one sampler per measurement, and the missing
# driver is news once.
_LOGGED_REASONS: set[str] = set()
_LOG_LOCK = threading.Lock()
_UNAVAILABLE_MESSAGE = "NVML unavailable (%s): sampling host CPU and RSS only"

# Per-GPU metrics that get a mean and a peak in summary(); the energy counter gets a delta.
_GPU_METRICS = ("utilization_pct", "memory_used_mb", "power_w", "temperature_c")
_HOST_METRICS = ("cpu_pct", "process_cpu_pct", "rss_mb")
# Rates measured since the previous reading: in the first sample that is before the window.
_PRE_WINDOW_KEYS = ("host/cpu_pct", "host/process_cpu_pct")


def nvml_error_text(error: pynvml.NVMLError) -> str:
  """The NVML error's message; its `__str__` itself calls into NVML, which may be absent."""
  try:
    return f"{type(error).__name__}: {error}"
  except Exception:  # noqa: BLE001  (str() of an NVMLError can raise without the library)
    return f"{type(error).__name__} (NVML error code {getattr(error, 'value', '?')})"


def _log_once(level: int, message: str, reason: str) -> None:
  """Logs `message % reason` the first time this process meets `reason`."""
  with _LOG_LOCK:
    if reason in _LOGGED_REASONS:
      return
    _LOGGED_REASONS.add(reason)
  logging.log(level, message, reason)


def _nvml_field(read, scale: float = 1.0) -> float | None:
  """One NVML reading scaled to our units; None where unsupported or failing.

  A failing reading (a lost GPU, say) must not end the sampling thread, so it becomes
  None too, and its error is logged once.
  """
  try:
    return read() * scale
  except pynvml.NVMLError_NotSupported:
    return None
  except pynvml.NVMLError as error:
    _log_once(logging.WARNING, "NVML reading failed (%s): recording None", nvml_error_text(error))
    return None


class DeviceSampler:
  """Samples GPU and host metrics every `interval_s` on a daemon thread.

  Use as a context manager (or `start()` / `stop()`), then read `summary()`:

    with DeviceSampler(interval_s=0.5) as sampler:
      run_the_thing()
    sampler.summary()["host/cpu_pct_mean"]

  Args:
    interval_s: seconds between samples. `start()` takes a first sample at once (so
      `latest()` is never empty while running) and `stop()` a final one, so even a window
      shorter than the interval is covered. The first sample's CPU figures describe the
      time before the window (since the previous reading, or since the process started),
      so `summary()` leaves them out of the CPU means and peaks.
  """

  def __init__(self, interval_s: float = 0.5):
    if interval_s <= 0:
      raise ValueError(f"interval_s must be > 0, got {interval_s}")
    self.interval_s = interval_s
    self.gpu_unavailable_reason: str | None = None
    self._handles: list[Any] = []
    self._nvml_initialised = False
    self._process = psutil.Process()
    self._samples: list[dict[str, float | None]] = []
    self._lock = threading.Lock()
    self._stop_event = threading.Event()
    self._thread: threading.Thread | None = None
    self._start_time: float | None = None
    self._stop_time: float | None = None

  @property
  def gpu_available(self) -> bool:
    return bool(self._handles)

  def __enter__(self) -> "DeviceSampler":
    return self.start()

  def __exit__(self, *exc_info) -> None:
    self.stop()

  def start(self) -> "DeviceSampler":
    """Opens NVML (if it can), primes the CPU counters and starts the sampling thread."""
    if self._thread is not None:
      raise RuntimeError("DeviceSampler already started")
    self._init_nvml()
    self._start_time = time.monotonic()
    # cpu_percent(None) measures since its previous call, so this first sample also
    # starts both CPU counters for the window.
    self._sample(first=True)
    self._stop_event.clear()
    self._thread = threading.Thread(target=self._run, name="DeviceSampler", daemon=True)
    self._thread.start()
    return self

  def stop(self) -> None:
    """Stops the thread, takes a final sample and releases NVML. Safe to call twice."""
    if self._thread is None:
      return
    self._stop_event.set()
    self._thread.join()
    self._thread = None
    self._sample()
    self._stop_time = time.monotonic()
    if self._nvml_initialised:
      pynvml.nvmlShutdown()
      self._nvml_initialised = False

  def latest(self) -> dict[str, float | None]:
    """The most recent sample (flat keys, see the module docstring); {} before the first."""
    with self._lock:
      return dict(self._samples[-1]) if self._samples else {}

  def summary(self) -> dict[str, Any]:
    """Means and peaks over the window, GPU energy deltas, and whether NVML was there.

    Returns:
      `{metric}_mean` and `{metric}_peak` for every sampled metric (None when no sample
      had a value), `gpu{i}/energy_j` (joules used in the window; None if unsupported),
      `gpu_available`, `gpu_unavailable_reason`, `num_gpus`, `num_samples`, `window_s`.
    """
    with self._lock:
      samples = list(self._samples)
    end = self._stop_time if self._stop_time is not None else time.monotonic()
    result: dict[str, Any] = {
        "gpu_available": self.gpu_available,
        "gpu_unavailable_reason": self.gpu_unavailable_reason,
        "num_gpus": len(self._handles),
        "num_samples": len(samples),
        "window_s": round(end - self._start_time, 3) if self._start_time is not None else 0.0,
    }
    keys = [f"host/{m}" for m in _HOST_METRICS]
    keys += [f"gpu{i}/{m}" for i in range(len(self._handles)) for m in _GPU_METRICS]
    for key in keys:
      window = samples[1:] if key in _PRE_WINDOW_KEYS else samples
      values = [s[key] for s in window if s.get(key) is not None]
      result[f"{key}_mean"] = round(sum(values) / len(values), 3) if values else None
      result[f"{key}_peak"] = round(max(values), 3) if values else None
    for i in range(len(self._handles)):
      counter = [s[f"gpu{i}/total_energy_j"] for s in samples
                 if s.get(f"gpu{i}/total_energy_j") is not None]
      result[f"gpu{i}/energy_j"] = round(counter[-1] - counter[0], 3) if len(counter) > 1 else None
    return result

  def _init_nvml(self) -> None:
    try:
      pynvml.nvmlInit()
    except pynvml.NVMLError as error:
      self.gpu_unavailable_reason = nvml_error_text(error)
      _log_once(logging.INFO, _UNAVAILABLE_MESSAGE, self.gpu_unavailable_reason)
      return
    self._nvml_initialised = True
    count = pynvml.nvmlDeviceGetCount()
    self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    if not self._handles:
      self.gpu_unavailable_reason = "NVML found no GPUs"
      _log_once(logging.INFO, _UNAVAILABLE_MESSAGE, self.gpu_unavailable_reason)

  def _run(self) -> None:
    while not self._stop_event.wait(self.interval_s):
      self._sample()

  def _sample(self, first: bool = False) -> None:
    sample: dict[str, float | None] = {
        "host/cpu_pct": psutil.cpu_percent(interval=None),
        "host/process_cpu_pct": self._process.cpu_percent(interval=None),
        "host/rss_mb": self._process.memory_info().rss / 2**20,
    }
    if first:  # a fresh Process reads 0.0 on its first call: use the lifetime average
      sample["host/process_cpu_pct"] = self._lifetime_process_cpu_pct()
    for i, handle in enumerate(self._handles):
      sample.update(self._gpu_sample(i, handle))
    with self._lock:
      self._samples.append(sample)

  def _lifetime_process_cpu_pct(self) -> float:
    times = self._process.cpu_times()
    elapsed = max(time.time() - self._process.create_time(), 1e-3)
    return 100.0 * (times.user + times.system) / elapsed

  @staticmethod
  def _gpu_sample(index: int, handle) -> dict[str, float | None]:
    prefix = f"gpu{index}/"
    return {
        prefix + "utilization_pct": _nvml_field(
            lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        prefix + "memory_used_mb": _nvml_field(
            lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used, 1 / 2**20),
        prefix + "power_w": _nvml_field(lambda: pynvml.nvmlDeviceGetPowerUsage(handle), 1e-3),
        prefix + "temperature_c": _nvml_field(
            lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        prefix + "total_energy_j": _nvml_field(
            lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), 1e-3),
    }
