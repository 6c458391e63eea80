"""A user's mistake at any entry point: one line on stderr naming the flag or file, exit 2.

Run as a user runs them (subprocesses, real flags, tiny data). A mistake in the flags or the
paths is answered before TensorFlow's import starts (the tests check it), except where the
answer needs the machine's devices. TensorFlow 2.21 writes a few lines of its own C++
logging to stderr when it is imported, whatever TF_CPP_MIN_LOG_LEVEL says (before
absl::InitializeLog), so those lines are dropped before counting ours.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from absl import app, flags

from launch import usage
from tests.engine.eval.test_predict import write_run_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHERS = ["launch.train", "launch.evaluate", "launch.predict", "launch.export",
             "tfrecords.shard", "launch.quickstart"]
_TF_NATIVE_LOG = re.compile(r"^([IWEF]0000 00:00:|WARNING: All log messages before absl::"
                            r"InitializeLog\(\)|To enable the following instructions:)")


def _python(*args: str, cwd: str = REPO) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                        timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO))


def run(module: str, *args: str, cwd: str = REPO) -> subprocess.CompletedProcess:
  return _python("-m", module, *args, cwd=cwd)


# `python -m MODULE ARGS`, then whether TensorFlow was imported, as the last line of stdout.
_RUN_REPORTING_TENSORFLOW = """import runpy, sys
module = sys.argv.pop(1)
try:
  runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
  print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def run_reporting_tensorflow(module: str, *args: str) -> subprocess.CompletedProcess:
  return _python("-c", _RUN_REPORTING_TENSORFLOW, module, *args)


def our_stderr(result: subprocess.CompletedProcess) -> list[str]:
  """stderr without TensorFlow's import-time C++ log lines."""
  return [line for line in result.stderr.splitlines() if not _TF_NATIVE_LOG.match(line)]


def assert_answered_before_tensorflow(result: subprocess.CompletedProcess) -> None:
  """For run_reporting_tensorflow's result."""
  assert result.stdout.endswith("tensorflow imported: False\n"), result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess, module: str, *fragments: str):
  lines = our_stderr(result)
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1, "\n".join(lines)
  assert lines[0].startswith(f"{module}: error: "), lines[0]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


# In-process: the wording.

def test_flag_errors_are_reworded_to_name_the_flag_or_file():
  flag_values = flags.FlagValues()
  flags.DEFINE_integer("epochs", 1, "", flag_values=flag_values)
  with pytest.raises(flags.UnrecognizedFlagError) as typo:
    flag_values(["prog", "--epochz=3"])
  assert usage.flag_error_message(typo.value) == "unknown flag --epochz (did you mean --epochs?)"
  with pytest.raises(flags.UnrecognizedFlagError) as unknown:
    flag_values(["prog", "--zzzzzz=3"])
  assert usage.flag_error_message(unknown.value) == "unknown flag --zzzzzz"
  with pytest.raises(flags.CantOpenFlagFileError) as missing:
    flag_values(["prog", "--flagfile=/no/such.flags"])
  assert (usage.flag_error_message(missing.value)
          == "--flagfile=/no/such.flags: no such file or directory")
  with pytest.raises(flags.IllegalFlagValueError) as bad_value:
    flag_values(["prog", "--epochs=many"])
  assert usage.flag_error_message(bad_value.value).startswith("flag --epochs=many: ")


def test_every_entry_point_runs_through_usage():
  # usage.run turns flag mistakes into one line; absl's app.run would print two and exit 1.
  mains = []
  for package in ("launch", "tfrecords", "benchmarks"):
    for name in sorted(n for n in os.listdir(os.path.join(REPO, package)) if n.endswith(".py")):
      with open(os.path.join(REPO, package, name)) as f:
        source = f.read()
      if 'if __name__ == "__main__":' in source:
        mains.append(f"{package}.{name[:-3]}")
        assert "\n  usage.run(main" in source and "app.run(" not in source, name
  assert len(mains) >= 18 and {"launch.train", "benchmarks.recipes"} <= set(mains)


def test_fail_prints_one_line_and_exits_2(capsys):
  with pytest.raises(SystemExit) as exit_info:
    usage.fail(KeyError("unknown backbone 'x'; known: a,\nb"))
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.endswith(": error: unknown backbone 'x'; known: a, b\n")
  with pytest.raises(SystemExit) as exit_info:
    usage.fail(app.UsageError("--model_dir is required"), exit_code=1)
  assert exit_info.value.code == 1
  assert capsys.readouterr().err.count("\n") == 1


# Every entry point: a missing flagfile and a mistyped flag, answered before TensorFlow's
# import (seconds on a laptop) starts.

def test_a_mistyped_flag():
  assert_one_line_error(run("launch.train", "--epochz=3"), "launch.train",
                        "unknown flag --epochz (did you mean --epochs?)")


@pytest.mark.parametrize("module", LAUNCHERS)
def test_every_entry_point_on_a_missing_flagfile_and_a_typo(module, tmp_path):
  missing = str(tmp_path / "nope.flags")
  for args, fragment in (([f"--flagfile={missing}"], f"--flagfile={missing}: no such file or "
                          "directory"), (["--no_such_flag=1"], "unknown flag --no_such_flag")):
    result = run_reporting_tensorflow(module, *args)
    assert_one_line_error(result, module, fragment)
    assert_answered_before_tensorflow(result)


def test_a_flagfile_nesting_a_missing_one_names_the_missing_one(tmp_path):
  outer = tmp_path / "outer.flags"
  outer.write_text(f"--flagfile={tmp_path / 'inner.flags'}\n--epochs=1\n")
  assert_one_line_error(run("launch.train", f"--flagfile={outer}"), "launch.train",
                        f"--flagfile={tmp_path / 'inner.flags'}: no such file")


# Contradictory combinations, answered before TensorFlow's import starts.

@pytest.mark.parametrize("module, args, fragment", [
    ("launch.train", ["--strategy=one_device", "--cpu_devices=2"], "contradicts"),
    ("launch.train", ["--epochs=0"], "set epochs or train_steps"),
    ("launch.quickstart", ["--work_dir={tmp}/W", "--model_dir={tmp}/M"],
     "--work_dir sets --data_dir"),
    ("tfrecords.shard", ["--balance_by=Male"], "balance_by needs max_examples"),
    ("tfrecords.shard", ["--image_size=a,b"], "--image_size must be H,W"),
    ("launch.export", ["--format=coreml"], "flag --format=coreml"),
    ("launch.export", ["--format=keras", "--output={tmp}/model.h5"], "must end in .keras"),
    ("launch.predict", ["--output={tmp}/preds.txt", "face.jpg"], "must end in .csv or .json"),
])
def test_contradictory_flags(celeba_dir, celeba_shards, tmp_path, module, args, fragment):
  result = run_reporting_tensorflow(module, *_with_paths(module, args, tmp_path, celeba_dir,
                                                         celeba_shards))
  assert_one_line_error(result, module, fragment)
  assert sorted(os.listdir(tmp_path)) in ([], ["trained"])  # refused before writing anything
  assert_answered_before_tensorflow(result)


# What this machine cannot run: the answer needs its device list, so TensorFlow.

@pytest.mark.slow
@pytest.mark.parametrize("module, args, fragment", [
    ("launch.train", ["--strategy=mirrored", "--cpu_devices=1"], "--cpu_devices=2 or more"),
    ("launch.train", ["--precision=mixed_float16"], "--precision=mixed_float16 needs a GPU"),
    ("launch.quickstart", ["--work_dir={tmp}/W", "--precision=mixed_float16"], "mixed_float16"),
])
def test_what_this_machine_cannot_run(celeba_dir, celeba_shards, tmp_path, module, args,
                                      fragment):
  if "--precision=mixed_float16" in args and _has_gpu_or_native_fp16():
    pytest.skip("this machine runs mixed_float16")
  if "--cpu_devices=1" in args and _has_gpu_or_native_fp16(gpu_only=True):
    pytest.skip("mirrored runs on this machine's GPUs")
  result = run(module, *_with_paths(module, args, tmp_path, celeba_dir, celeba_shards))
  assert_one_line_error(result, module, fragment)
  assert sorted(os.listdir(tmp_path)) == []


def _with_paths(module, args, tmp_path, celeba_dir, celeba_shards) -> list[str]:
  """args, formatted, after the paths each entry point needs."""
  args = [arg.format(tmp=tmp_path) for arg in args]
  if module == "launch.train":
    return [f"--data_dir={celeba_shards}", f"--model_dir={tmp_path / 'run'}", *args]
  if module == "tfrecords.shard":
    return [f"--data_dir={celeba_dir}", f"--output_dir={tmp_path / 'out'}", *args]
  if module in ("launch.export", "launch.predict"):
    return [f"--model_dir={write_run_dir(tmp_path / 'trained')}", *args]
  return args


def _has_gpu_or_native_fp16(gpu_only: bool = False) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from engine.precision import cpu_flags  # pylint: disable=g-import-not-at-top
  if tf.config.list_physical_devices("GPU"):
    return True
  return not gpu_only and bool(cpu_flags() & {"avx512_fp16", "amx_fp16"})


# Paths that are not what the flag says, answered before TensorFlow's import starts.

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A run, a directory that is not a run, and a run without checkpoints."""
  root = tmp_path_factory.mktemp("runs")
  run_dir = write_run_dir(root / "run")
  (root / "not_a_run").mkdir()
  (root / "no_checkpoints").mkdir()
  shutil.copy(os.path.join(run_dir, "config.json"), root / "no_checkpoints" / "config.json")
  return {name: str(root / name) for name in ("run", "not_a_run", "no_checkpoints")}


def test_evaluate_a_directory_that_is_not_a_run(runs, celeba_shards):
  result = run_reporting_tensorflow("launch.evaluate", f"--model_dir={runs['not_a_run']}",
                                    f"--data_dir={celeba_shards}")
  assert_one_line_error(result, "launch.evaluate", os.path.join(runs["not_a_run"], "config.json"))
  assert_answered_before_tensorflow(result)


@pytest.mark.parametrize("module, run_name, extra, fragment", [
    ("launch.evaluate", "run", ["--data_dir={empty}"], "{empty}/manifest.json"),
    ("launch.evaluate", "run", [], "/nonexistent/shards/manifest.json"),  # the run's own
    ("launch.evaluate", "no_checkpoints", ["--data_dir={shards}"], "best"),
    ("launch.evaluate", "no_checkpoints", ["--data_dir={shards}", "--checkpoint=latest"],
     "checkpoints"),
    ("launch.evaluate", "run", ["--data_dir={shards}", "--split=tset"], "no split 'tset'"),
    ("launch.predict", "not_a_run", ["{image}"], "config.json"),
    ("launch.predict", "no_checkpoints", ["{image}"], "best"),
    ("launch.export", "not_a_run", [], "config.json"),
    ("launch.export", "no_checkpoints", [], "best"),
    ("launch.export", "no_checkpoints", ["--checkpoint=latest"], "checkpoints"),
])
def test_paths_that_are_not_what_the_flag_says(runs, celeba_shards, tmp_path, module,
                                               run_name, extra, fragment):
  (tmp_path / "empty").mkdir()
  (tmp_path / "face.jpg").write_bytes(b"")
  names = {"empty": str(tmp_path / "empty"), "shards": celeba_shards,
           "image": str(tmp_path / "face.jpg")}
  args = [f"--model_dir={runs[run_name]}", *(arg.format(**names) for arg in extra)]
  result = run_reporting_tensorflow(module, *args)
  assert_one_line_error(result, module, runs[run_name] if run_name != "run" else "",
                        fragment.format(**names))
  assert_answered_before_tensorflow(result)


def test_shard_without_a_source_directory(tmp_path):
  result = run_reporting_tensorflow("tfrecords.shard", f"--data_dir={tmp_path / 'nope'}",
                                    f"--output_dir={tmp_path / 'out'}")
  assert_one_line_error(result, "tfrecords.shard", f"--data_dir={tmp_path / 'nope'}: no such "
                        "directory")
  assert_answered_before_tensorflow(result)
