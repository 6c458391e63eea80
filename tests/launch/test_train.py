"""`python -m launch.train` as a user runs it: flagfiles, bad flags, strategies, workers.

kill -9, SIGTERM and the resume to the uninterrupted run's weights, best checkpoint and
image count are scenarios of the fault campaign (tests/benchmarks/test_faults.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

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
