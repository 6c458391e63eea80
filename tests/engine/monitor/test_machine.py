"""engine.monitor.machine: the one reader of /proc/cpuinfo."""

import os

import pytest

from engine.monitor import machine

_CPUINFO = """processor\t: 0
model name\t: Test CPU @ 2.00GHz
flags\t\t: fpu avx2 avx512_bf16 amx_bf16

processor\t: 1
model name\t: Test CPU @ 2.00GHz
flags\t\t: fpu avx2 avx512_bf16 amx_bf16 only_on_cpu1
"""


def test_cpuinfo_reads_the_first_processor(tmp_path):
  path = tmp_path / "cpuinfo"
  path.write_text(_CPUINFO)
  fields = machine.cpuinfo(str(path))
  assert fields["model name"] == "Test CPU @ 2.00GHz"
  assert set(fields["flags"].split()) == {"fpu", "avx2", "avx512_bf16", "amx_bf16"}
  assert machine.cpuinfo(str(tmp_path / "missing")) == {}


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="Linux only")
def test_cpu_flags_and_machine_description_agree():
  flags = machine.cpu_flags()
  assert "fpu" in flags or not flags  # x86: fpu; other CPUs may name their flags otherwise
  assert set(machine.machine_description()["cpu_features"]) <= flags
