"""Device monitoring: NVML GPU sampling with a host CPU/RSS fallback, machine description."""

from engine.monitor.machine import machine_description
from engine.monitor.sampler import DeviceSampler

__all__ = ["DeviceSampler", "machine_description"]
