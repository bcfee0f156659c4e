"""Hardware-aware defaults: precision from the CPU's flags or the CUDA device, thread counts."""

import pytest
import torch

from zoetrope import hardware
from zoetrope.errors import UserError

CPU = torch.device("cpu")


@pytest.mark.parametrize("flags, name, reason", [
    ({"avx2", "fma"}, "fp32", "CPU without native bf16: no avx512_bf16/amx_bf16"),
    ({"avx512f", "avx512_bf16"}, "bf16", "CPU with native bf16: avx512_bf16"),
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, "bf16", "CPU with native bf16: avx512_bf16, amx_bf16"),
    ({"fp", "asimd", "bf16"}, "bf16", "CPU with native bf16: bf16"),  # ARMv8.6 BF16
    (None, "fp32", "CPU flags unknown"),
])
def test_auto_precision_follows_the_cpu_flags(monkeypatch, flags, name, reason):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: None if flags is None else frozenset(flags))
    chosen = hardware.choose_precision("auto", CPU)
    assert chosen.name == name and chosen.autocast == (name == "bf16")
    assert chosen.reason.startswith(reason)
    assert chosen.describe().startswith(f"precision: {'bf16 autocast' if name == 'bf16' else 'fp32'} (")


def test_explicit_precision_is_kept(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    assert hardware.choose_precision("bf16", CPU).name == "bf16"  # forced, even if emulated
    assert hardware.choose_precision("fp32", CPU).describe() == "precision: fp32 (set in the recipe)"
    with pytest.raises(UserError, match="precision must be"):
        hardware.choose_precision("fp16", CPU)


def test_this_machines_flags_are_read():
    flags = hardware.cpu_flags()
    assert flags is None or isinstance(flags, frozenset)


def test_threads_default_to_omp_num_threads_or_the_physical_cores(monkeypatch):
    cores = hardware.physical_cores()
    assert 1 <= cores <= (torch.multiprocessing.cpu_count() or cores)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert hardware.default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert hardware.default_threads() == cores
    before = torch.get_num_threads()
    try:
        assert hardware.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_worker_defaults_leave_cpu_training_its_cores(monkeypatch):
    monkeypatch.setattr(hardware, "physical_cores", lambda: 2)
    assert hardware.default_num_workers(CPU) == 0  # a 2-core laptop decodes in the main process
    monkeypatch.setattr(hardware, "physical_cores", lambda: 16)
    assert hardware.default_num_workers(CPU) == 2
    assert hardware.default_num_workers(torch.device("cuda", 0)) == 8
    assert hardware.default_num_workers(torch.device("cuda", 0), ranks_per_node=8) == 1
