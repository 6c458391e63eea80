"""`python -m launch.data_service` and `launch.train --tf_data_service` as a user runs them:
servers and trainers in separate processes on localhost, a worker killed, the dispatcher
restarted, two MultiWorker trainers sharing one service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from engine.data.local_service import free_port
from tests.launch.test_train import REPO, _command, _env, _run, _summary
from tests.launch.test_usage import assert_one_line_error


def _server(role: str, log_path: str, *flags: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "launch.data_service", f"--role={role}", *flags],
                          cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=open(log_path, "a"))


def _dispatcher(tmp_path, port: int) -> subprocess.Popen:
  return _server("dispatcher", str(tmp_path / "dispatcher.log"), f"--port={port}",
                 f"--work_dir={tmp_path / 'journal'}", "--worker_timeout_ms=2000")


def _worker(tmp_path, port: int, index: int) -> subprocess.Popen:
  return _server("worker", str(tmp_path / f"worker_{index}.log"), f"--dispatcher=localhost:{port}",
                 "--worker_host=localhost")


def _wait_for(path: str, pattern: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    if os.path.exists(path) and re.search(pattern, open(path).read()):
      return
    if process.poll() is not None:
      raise AssertionError(f"ended before {pattern!r}: {open(path).read()[-3000:]}")
    time.sleep(0.1)
  raise AssertionError(f"no {pattern!r} in {path} within {timeout_s} s")


def _stop(processes) -> None:
  for process in processes:
    if process.poll() is None:
      process.kill()
      process.wait()


@pytest.mark.slow
def test_training_survives_a_killed_worker_and_a_restarted_dispatcher(celeba_shards, tmp_path):
  port = free_port()
  dispatcher = _dispatcher(tmp_path, port)
  workers = [_worker(tmp_path, port, i) for i in range(2)]
  model_dir, trainer_log = str(tmp_path / "run"), str(tmp_path / "trainer.log")
  processes = [dispatcher, *workers]
  try:
    _wait_for(str(tmp_path / "dispatcher.log"), r"workers: \d -> 2", dispatcher)
    trainer = subprocess.Popen(
        _command(celeba_shards, model_dir, f"--tf_data_service=grpc://localhost:{port}",
                 "--epochs=12", "--steps_per_loop=2", "--rotation=10", "--flip"),
        cwd=REPO, env={**_env(), "TF_CPP_MIN_LOG_LEVEL": "0"}, stdout=subprocess.DEVNULL,
        stderr=open(trainer_log, "w"))
    processes.append(trainer)
    _wait_for(trainer_log, r"step (1[0-9]|[2-9][0-9])/144", trainer)
    workers[0].kill()  # kill -9
    _wait_for(trainer_log, r"step ([4-9][0-9]|1[0-4][0-9])/144", trainer)
    dispatcher.kill()
    dispatcher.wait()
    processes.append(restarted := _dispatcher(tmp_path, port))  # same port, same journal
    assert trainer.wait(timeout=240) == 0, open(trainer_log).read()[-3000:]
  finally:
    _stop(processes)
  log = open(trainer_log).read()
  assert "augmentation on the device (tf.data service" in log
  assert "Failed to heartbeat to dispatcher" in log  # TensorFlow's warning while it was down
  summary = _summary(model_dir)
  assert summary["step"] == summary["total_steps"] == 144 and summary["stopped_by"] == "completed"
  assert "fault tolerant: True" in open(tmp_path / "dispatcher.log").read()
  assert restarted.returncode is not None  # it was running until the end


@pytest.mark.slow
def test_two_multi_worker_trainers_through_one_service_end_with_identical_weights(
    celeba_shards, tmp_path):
  port, ports = free_port(), [free_port(), free_port()]
  processes = [_dispatcher(tmp_path, port), _worker(tmp_path, port, 0)]
  model_dir = str(tmp_path / "run")
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  try:
    for index in range(2):
      tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
      processes.append(subprocess.Popen(
          _command(celeba_shards, model_dir, "--strategy=multi_worker", "--epochs=1",
                   f"--tf_data_service=grpc://localhost:{port}"), cwd=REPO,
          env=_env(TF_CONFIG=tf_config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
          text=True))
    errors = [p.communicate(timeout=300)[1] for p in processes[2:]]
  finally:
    _stop(processes)
  assert all(p.returncode == 0 for p in processes[2:]), "\n".join(e[-2000:] for e in errors)
  chief = _summary(model_dir)
  worker = _summary(os.path.join(model_dir, "workers", "worker_1"))
  assert chief["replicas"] == 2 and chief["step"] == 12
  assert chief["weights_sha256"] == worker["weights_sha256"]


def test_an_unreachable_service_is_one_line_naming_it(celeba_shards, tmp_path):
  port = free_port()
  started = time.time()
  result = _run(_command(celeba_shards, str(tmp_path / "run"),
                         f"--tf_data_service=grpc://localhost:{port}"))
  assert_one_line_error(result, "launch.train", f"no dispatcher reachable at localhost:{port}")
  assert time.time() - started < 60


@pytest.mark.parametrize("flags, message", [
    (["--augment_on=host"], "Python that a tf.data service worker cannot run"),
    (["--tf_data_service=localhost"], "must be grpc://HOST:PORT"),
])
def test_what_a_service_cannot_do_is_refused_before_training(celeba_shards, tmp_path, flags,
                                                              message):
  result = _run(_command(celeba_shards, str(tmp_path / "run"),
                         "--tf_data_service=grpc://localhost:1", *flags))
  assert_one_line_error(result, "launch.train", message)


@pytest.mark.parametrize("flags, message", [
    ([], "--role=dispatcher or --role=worker is required"),
    (["--role=worker"], "a worker needs --dispatcher=HOST:PORT"),
    (["--role=worker", "--dispatcher=nohost"], "dispatcher must be grpc://HOST:PORT"),
])
def test_server_flag_mistakes_are_one_line(flags, message):
  result = _run([sys.executable, "-m", "launch.data_service", *flags])
  assert_one_line_error(result, "launch.data_service", message)
