"""`python -m launch.train` as a user runs it: flagfiles, strategies, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.launch.test_usage import assert_one_line_error

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(shards: str, model_dir: str, *extra: str) -> list[str]:
  return [sys.executable, "-m", "launch.train", f"--data_dir={shards}", f"--model_dir={model_dir}",
          "--backbone=tiny_resnet", "--image_size=32", "--batch_size=8", "--epochs=2",
          "--steps_per_loop=4", "--precision=float32", "--learning_rate=3e-3", *extra]


def _env(**extra) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
  env.pop("TF_CONFIG", None)
  env.update(extra)
  return env


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, cwd=REPO, env=kwargs.pop("env", _env()), capture_output=True,
                        text=True, timeout=300, **kwargs)


def _summary(model_dir: str) -> dict:
  with open(os.path.join(model_dir, "summary.json")) as f:
    return json.load(f)


def test_trains_and_writes_the_run_directory(celeba_shards, tmp_path):
  model_dir = str(tmp_path / "run")
  result = _run(_command(celeba_shards, model_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "tensorboard --logdir" in result.stdout
  for path in ("config.json", "summary.json", "best/model.weights.h5", "best/metrics.json",
               "checkpoints/checkpoint"):
    assert os.path.exists(os.path.join(model_dir, path)), path
  with open(os.path.join(model_dir, "config.json")) as f:
    config = json.load(f)
  assert config["model"]["backbone"] == "tiny_resnet" and config["input"]["global_batch_size"] == 8
  assert "step 24/24" in result.stderr  # the progress line


@pytest.mark.parametrize("flags, message", [
    (["--backbone=resnet9000"], "unknown backbone 'resnet9000'"),
    (["--batch_size=-4"], "--batch_size must be a positive integer"),
    (["--strategy=one_device", "--cpu_devices=2"], "contradicts"),
    (["--precision=float8"], "unknown precision 'float8'"),
])
def test_bad_flags_fail_clearly_before_training(celeba_shards, tmp_path, flags, message):
  result = _run(_command(celeba_shards, str(tmp_path / "run"), *flags))
  assert_one_line_error(result, "launch.train", message)
  assert not os.path.exists(tmp_path / "run" / "config.json")


def test_mirrored_over_two_logical_cpus(celeba_shards, tmp_path):
  model_dir = str(tmp_path / "run")
  result = _run(_command(celeba_shards, model_dir, "--strategy=mirrored", "--cpu_devices=2"))
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(model_dir)
  assert summary["replicas"] == 2 and summary["jit_compile"] is False
  assert summary["final_metrics"]["val_accuracy"] >= 0.7


def _wait_for_checkpoint(model_dir: str, step: int, process, timeout_s: float = 120) -> None:
  index = os.path.join(model_dir, "checkpoints", "checkpoint")
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    if os.path.exists(index) and f"ckpt-{step}\"" in open(index).read():
      return
    if process.poll() is not None:
      raise AssertionError(f"run ended before checkpoint {step}: {process.stderr.read()[-2000:]}")
    time.sleep(0.02)
  raise AssertionError(f"no checkpoint {step} within {timeout_s} s")


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(celeba_shards, tmp_path):
  flags = ["--deterministic", "--epochs=8", "--checkpoint_every=8", "--image_size=48",
           "--rotation=10", "--zoom=0.1", "--ema_decay=0.9", "--schedule=cosine"]
  whole = str(tmp_path / "whole")
  assert _run(_command(celeba_shards, whole, *flags)).returncode == 0
  killed = str(tmp_path / "killed")
  process = subprocess.Popen(_command(celeba_shards, killed, *flags), cwd=REPO, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for_checkpoint(killed, 16, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
  finally:
    process.kill()
  assert not os.path.exists(os.path.join(killed, "summary.json")), "killed too late to test"
  resumed = _run(_command(celeba_shards, killed, *flags))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from" in resumed.stderr
  assert _summary(killed)["weights_sha256"] == _summary(whole)["weights_sha256"]
  assert _summary(killed)["best"] == _summary(whole)["best"]
  # Timing sums both processes; the images trained count once (16 checkpointed + the rest).
  timing = _summary(killed)
  assert timing["processes"] == 2 and _summary(whole)["processes"] == 1
  assert timing["images"] == _summary(whole)["images"]
  assert timing["wall_seconds"] > timing["this_process_wall_seconds"] > 0


def test_sigterm_saves_and_stops(celeba_shards, tmp_path):
  model_dir = str(tmp_path / "run")
  process = subprocess.Popen(_command(celeba_shards, model_dir, "--epochs=50", "--checkpoint_every=1000"),
                             cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(model_dir, "best", "metrics.json")):
      assert time.time() < deadline and process.poll() is None
      time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
  finally:
    process.kill()
  assert process.returncode == 0, stderr[-2000:]
  summary = _summary(model_dir)
  assert summary["stopped_by"] == "SIGTERM" and summary["step"] < summary["total_steps"]
  index = open(os.path.join(model_dir, "checkpoints", "checkpoint")).read()
  assert f"ckpt-{summary['step']}\"" in index


def _free_ports(n: int) -> list[int]:
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.mark.slow
def test_two_workers_on_localhost_end_with_identical_weights(celeba_shards, tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  model_dir = str(tmp_path / "run")
  processes = []
  for index in range(2):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    processes.append(subprocess.Popen(
        _command(celeba_shards, model_dir, "--strategy=multi_worker", "--epochs=1"), cwd=REPO,
        env=_env(TF_CONFIG=tf_config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True))
  try:
    errors = [p.communicate(timeout=300)[1] for p in processes]
  finally:
    for p in processes:
      p.kill()
  assert all(p.returncode == 0 for p in processes), "\n".join(e[-2000:] for e in errors)
  chief = _summary(model_dir)
  worker = _summary(os.path.join(model_dir, "workers", "worker_1"))
  assert chief["replicas"] == 2
  assert chief["weights_sha256"] == worker["weights_sha256"]
  assert not os.path.exists(os.path.join(model_dir, "workers", "worker_1", "checkpoints"))


def test_missing_shards_say_how_to_make_them(tmp_path):
  result = _run(_command(str(tmp_path / "nothing"), str(tmp_path / "run")))
  assert_one_line_error(result, "launch.train", f"{tmp_path / 'nothing'}/manifest.json",
                        "shard the data first")
