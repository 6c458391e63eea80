"""`python -m launch.models`, run as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  return subprocess.run([sys.executable, "-m", "launch.models", *args], capture_output=True,
                        text=True, cwd=ROOT)


def test_json_lists_params_flops_and_weights():
  result = _run("--backbones=tiny_resnet,resnet18", "--image_size=32,32", "--json")
  assert result.returncode == 0, result.stderr
  zoo = json.loads(result.stdout)
  by_name = {b["backbone"]: b for b in zoo["backbones"]}
  assert by_name["resnet18"]["trainable_params"] == 11_176_512
  assert by_name["resnet18"]["default_image_size"] == [224, 224]
  assert by_name["resnet18"]["imagenet_weights"] is False
  assert 0 < by_name["tiny_resnet"]["gflops"] < by_name["resnet18"]["gflops"]
  assert zoo["heads"] == ["deep", "linear", "mlp"]


@pytest.mark.slow  # builds ResNet50 three times (~15 s)
def test_resnet50_drops_conv_biases_from_scratch_and_keeps_them_for_imagenet():
  result = _run("--backbones=resnet50", "--image_size=32,32", "--json")
  assert result.returncode == 0, result.stderr
  (resnet50,) = json.loads(result.stdout)["backbones"]
  # 53 convs feed a batch norm; their biases (one per output channel) exist only with
  # ImageNet weights: the layout keras.applications publishes (23,534,592 trainable).
  assert resnet50["imagenet_trainable_params"] == 23_534_592
  assert resnet50["trainable_params"] == 23_534_592 - 26_560
  table = _run("--backbones=resnet50", "--image_size=32,32")
  assert "yes (23,534,592: conv biases before BN kept)" in table.stdout


def test_table_and_unknown_name():
  table = _run("--backbones=tiny_resnet", "--image_size=32,32")
  assert table.returncode == 0 and "tiny_resnet" in table.stdout and "heads:" in table.stdout
  bad = _run("--backbones=resnet9")
  assert bad.returncode != 0 and "unknown backbone 'resnet9'; known:" in bad.stderr
