"""A tf.data service on this machine, each server its own process: for tests and benchmarks.

The servers are the ones `python -m launch.data_service` starts (engine.data.service), so
a dataset they run crosses a process boundary exactly as it would to another machine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

from engine.config import DataServiceConfig

_SERVE = ("import logging; logging.basicConfig(level=logging.INFO, format='%(asctime)s "
          "%(levelname)s %(message)s'); from engine.config import DataServiceConfig; "
          "from engine.data import service; service.run_{role}(DataServiceConfig(**{kwargs!r}))")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


class LocalService:
  """One dispatcher and `num_workers` workers on localhost, each a subprocess.

  Logs go to `log_dir/dispatcher.log`, `log_dir/worker_<i>.log`. Use as a context manager;
  `stop()` kills whatever is still running.
  """

  def __init__(self, log_dir: str, num_workers: int, work_dir: str = "",
               worker_timeout_ms: int = 2000):
    self.log_dir, self.num_workers = log_dir, num_workers
    self.port = free_port()
    self.dispatcher_config = DataServiceConfig(role="dispatcher", port=self.port,
                                               work_dir=work_dir,
                                               worker_timeout_ms=worker_timeout_ms)
    self.dispatcher: subprocess.Popen | None = None
    self.workers: list[subprocess.Popen] = []

  @property
  def target(self) -> str:
    return f"grpc://localhost:{self.port}"

  def _spawn(self, config: DataServiceConfig, log_name: str) -> subprocess.Popen:
    kwargs = {f: getattr(config, f) for f in config.__dataclass_fields__}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    log = open(os.path.join(self.log_dir, log_name), "a")
    return subprocess.Popen(
        [sys.executable, "-c", _SERVE.format(role=config.role, kwargs=kwargs)], env=env,
        stdout=log, stderr=subprocess.STDOUT)

  def start_dispatcher(self) -> None:
    self.dispatcher = self._spawn(self.dispatcher_config, "dispatcher.log")

  def start_worker(self) -> None:
    config = DataServiceConfig(role="worker", dispatcher=f"localhost:{self.port}",
                               worker_host="localhost")
    self.workers.append(self._spawn(config, f"worker_{len(self.workers)}.log"))

  def __enter__(self) -> "LocalService":
    os.makedirs(self.log_dir, exist_ok=True)
    self.start_dispatcher()
    for _ in range(self.num_workers):
      self.start_worker()
    self.wait_for_workers(self.num_workers)
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  def dispatcher_log(self) -> str:
    with open(os.path.join(self.log_dir, "dispatcher.log")) as f:
      return f.read()

  def wait_for_workers(self, n: int, timeout_s: float = 120.0) -> None:
    """Until the (latest) dispatcher logs n registered workers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      counts = re.findall(r"tf.data service workers: \d+ -> (\d+)", self.dispatcher_log())
      if counts and int(counts[-1]) == n:
        return
      if self.dispatcher.poll() is not None:
        raise RuntimeError(f"dispatcher exited:\n{self.dispatcher_log()[-2000:]}")
      time.sleep(0.2)
    raise TimeoutError(f"{n} workers did not register within {timeout_s} s:\n"
                       f"{self.dispatcher_log()[-2000:]}")

  def kill_worker(self, index: int) -> None:
    self.workers[index].kill()
    self.workers[index].wait()

  def kill_dispatcher(self) -> None:
    self.dispatcher.kill()
    self.dispatcher.wait()

  def stop(self) -> None:
    for process in [self.dispatcher, *self.workers]:
      if process is not None and process.poll() is None:
        process.kill()
        process.wait()
