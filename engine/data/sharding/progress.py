"""A rate-limited progress line: images done, images/s, ETA."""

from __future__ import annotations

import logging
import time


class Progress:
  """Logs progress at most every `interval_s` seconds and once at the end."""

  def __init__(self, total: int, interval_s: float = 2.0, what: str = "images"):
    self.total, self.interval_s, self.what = total, interval_s, what
    self.done = 0
    self._start = self._last = time.perf_counter()

  def add(self, count: int) -> None:
    self.done += count
    now = time.perf_counter()
    if now - self._last >= self.interval_s or self.done >= self.total:
      self._last = now
      rate = self.done / max(now - self._start, 1e-9)
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      logging.info("%d/%d %s (%.0f %s/s, ETA %.0f s)", self.done, self.total, self.what,
                   rate, self.what, eta)
