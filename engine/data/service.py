"""tf.data service: the dispatcher and worker servers, and the trainer's side of a job.

One dispatcher hands out the training files; any number of CPU workers (other processes
or machines) read, decode and batch them; any number of trainers consume the batches of
one shared job. Dynamic sharding (`ShardingPolicy.DYNAMIC`): the dispatcher gives each
file of an epoch to one worker, so an example is produced at most once per epoch across
all workers (a file being read by a worker that dies is lost for that epoch: "at most").
The dataset a worker runs must be pure TensorFlow: augmentation then runs on the device.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time

import tensorflow as tf

from engine.config import ConfigError, DataServiceConfig, service_address

PROBE_TIMEOUT_S = 10.0


def probe_dispatcher(target: str, timeout_s: float | None = None) -> None:
  """Waits up to `timeout_s` for something to listen at the dispatcher's address.

  tf.data service itself retries an unreachable dispatcher for hours; a trainer or
  worker pointed at a wrong address must say so instead. A refused connection is
  retried until the deadline: servers started together may come up in any order.

  Raises:
    ConfigError: naming the address and the last failure.
  """
  _, host, port = service_address(target)
  timeout_s = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, port), timeout=max(deadline - time.monotonic(), 0.1)):
        return
    except OSError as e:
      if time.monotonic() + 0.2 >= deadline:
        raise ConfigError(f"tf.data service {target}: no dispatcher reachable at {host}:{port} "
                          f"within {timeout_s:.0f} s ({e}); start one with python -m "
                          "launch.data_service --role=dispatcher") from None
      time.sleep(0.2)


def distribute(source: tf.data.Dataset, target: str, job_name: str | None) -> tf.data.Dataset:
  """`source` run by the service's workers, dynamically sharded, consumed under `job_name`.

  Trainers that pass the same job name share one stream: each batch goes to one of them.
  """
  probe_dispatcher(target)
  logging.info("input through tf.data service %s (job %s, dynamic sharding)", target, job_name)
  return source.apply(tf.data.experimental.service.distribute(
      processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=target,
      job_name=job_name))


def job_name_for(model_dir: str, split: str) -> str:
  """One job per run directory and split: a run's trainers (and a resumed trainer) share
  it, another run on the same service does not."""
  digest = hashlib.sha256(os.path.abspath(model_dir).encode()).hexdigest()[:12]
  return f"facetrain-{split}-{digest}"


def run_dispatcher(config: DataServiceConfig) -> None:
  """Serves as the dispatcher until killed, logging each worker that registers.

  With `work_dir` the dispatcher journals its state there (fault-tolerant mode): restarted
  on the same port and work_dir it resumes its jobs and the trainers reconnect.
  """
  server = tf.data.experimental.service.DispatchServer(
      tf.data.experimental.service.DispatcherConfig(
          port=config.port, work_dir=config.work_dir or None,
          fault_tolerant_mode=bool(config.work_dir),
          worker_timeout_ms=config.worker_timeout_ms))
  logging.info("tf.data service dispatcher at %s (work_dir %s, fault tolerant: %s)",
               server.target, config.work_dir or "none", bool(config.work_dir))
  _watch_workers(server)


def _watch_workers(server) -> None:
  # Logs each worker that registers. TensorFlow keeps a lost worker in the count (and
  # exposes no liveness to Python): trainers notice a lost worker themselves and go on
  # with the others; see README "several machines plus CPU input workers".
  workers = 0
  while True:
    now = server._num_workers()  # pylint: disable=protected-access  (no public counter)
    if now != workers:
      logging.info("tf.data service workers: %d -> %d", workers, now)
      workers = now
    time.sleep(0.5)


def run_worker(config: DataServiceConfig) -> None:
  """Serves as a worker of the dispatcher at `config.dispatcher` until killed."""
  _, host, port = service_address(config.dispatcher)
  probe_dispatcher(config.dispatcher)
  server = tf.data.experimental.service.WorkerServer(
      tf.data.experimental.service.WorkerConfig(
          dispatcher_address=f"{host}:{port}", port=config.port,
          worker_address=f"{config.worker_host or socket.gethostname()}:%port%"))
  logging.info("tf.data service worker of %s:%d on port %s", host, port,
               server._address.rsplit(":", 1)[-1])  # pylint: disable=protected-access
  server.join()
