"""Defaults chosen for the machine: training precision, CPU threads and data-loading workers.

Precision. bf16 autocast pays only where the hardware computes bf16 natively: CUDA devices with
bf16 support, x86 CPUs with AVX512-BF16 or AMX, ARM CPUs with the BF16 extension. Elsewhere
(an AVX2-only laptop CPU) PyTorch emulates it, and on such a CPU one VAE training step took 20-27 s
in bf16 against 1.2-1.7 s in fp32 (18x) and a DiT step 5-7x longer. So `precision = "auto"`
(the default) picks bf16 autocast where it is native and fp32 elsewhere; "bf16" and "fp32" force
one. The CPU's abilities are read from the flags Linux lists in /proc/cpuinfo; where they cannot
be read, "auto" stays in fp32, which is never slow.

Threads. Intra-op threads default to the physical cores (hyper-threads share one core's matmul
units, so they add contention, not throughput), or to OMP_NUM_THREADS when the user set it (the
standard way to share a machine). Data-loading workers default to a share of the cores the
training compute does not need.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

# CPU flags (as Linux names them) that mean bf16 matmuls run natively: AVX512-BF16 and AMX-BF16 on
# x86, the ARMv8.6 BF16 extension on ARM ("Features: ... bf16").
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@dataclass(frozen=True)
class Precision:
    """The precision a run trains in, and why it was chosen (for the run's one line)."""

    name: str  # "bf16" (autocast, fp32 weights and optimizer) or "fp32"
    reason: str  # e.g. "CPU without native bf16: no avx512_bf16/amx_bf16"

    @property
    def autocast(self) -> bool:
        return self.name == "bf16"

    def describe(self) -> str:
        """One line for the run's output, e.g. 'precision: fp32 (CPU without native bf16: ...)'."""
        what = "bf16 autocast" if self.autocast else "fp32"
        return f"precision: {what} ({self.reason})"


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (x86 'flags', ARM 'Features'); None if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (x86 'model name'), else what `platform` says."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    import platform
    return platform.processor() or "unknown CPU"


def choose_precision(setting: str, device: torch.device) -> Precision:
    """Resolve a precision setting ("auto", "bf16", "fp32") for `device`, with the reason."""
    if setting in ("bf16", "fp32"):
        return Precision(setting, "set in the recipe")
    if setting != "auto":
        raise UserError(f"precision must be 'auto', 'bf16' or 'fp32', got {setting!r}")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"CUDA device with bf16: {name}")
        return Precision("fp32", f"CUDA device without bf16: {name}")
    flags = cpu_flags()
    if flags is None:
        return Precision("fp32", "CPU flags unknown (no /proc/cpuinfo), so no native bf16 assumed")
    native = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if native:
        return Precision("bf16", f"CPU with native bf16: {', '.join(native)}")
    return Precision("fp32", "CPU without native bf16: no avx512_bf16/amx_bf16")


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads of one core count once)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return len(allowed) if allowed else (os.cpu_count() or 1)
    cores, fields = set(), {}
    for line in [*text.splitlines(), ""]:  # blocks of "key : value" lines, one per logical CPU
        key, _, value = line.partition(":")
        if key.strip():
            fields[key.strip()] = value.strip()
            continue
        if "processor" in fields and (allowed is None or int(fields["processor"]) in allowed):
            # ARM lists no core ids: every logical CPU is then its own core
            cores.add((fields.get("physical id"), fields.get("core id", fields["processor"])))
        fields = {}
    return max(1, len(cores))


def default_threads() -> int:
    """Torch intra-op threads when a recipe says 0: OMP_NUM_THREADS if set, else physical cores."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else physical_cores()


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads (0: `default_threads()`); returns the number set."""
    count = threads or default_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def default_num_workers(device: torch.device, ranks_per_node: int = 1) -> int:
    """DataLoader workers per training process when data.num_workers = -1.

    GPU training leaves the CPU idle, so workers take this process's share of the cores less one
    (the process itself), up to 8. CPU training needs the cores for its own matmuls: workers get
    an eighth of them (0 on machines of up to 7 cores, 2 on 16), enough to hide decoding.
    """
    share = max(1, physical_cores() // max(1, ranks_per_node))
    if device.type == "cuda":
        return min(8, share - 1)
    return min(4, share // 8)


def resolve_device(name: str, setting: str = "device") -> torch.device:
    """A device name ("auto", "cpu", "cuda", "cuda:1", "mps") -> a torch.device that exists here.

    "auto" takes CUDA when available, else the CPU. A name torch does not know, a CUDA device on
    a build or machine without one, or an index past the last device is a one-line UserError
    naming `setting` (e.g. "--device").
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{setting} {name!r} is not a device; use cpu, cuda, cuda:N, mps "
                        f"or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA " \
                  "device is visible (driver, CUDA_VISIBLE_DEVICES)"
            raise UserError(f"{setting} {name!r}: {why}; use cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"{setting} {name!r}: there {'is' if count == 1 else 'are'} only "
                            f"{count} CUDA device{'s' if count != 1 else ''} (cuda:0 .. "
                            f"cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{setting} {name!r}: MPS is not available here; use cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{setting} {name!r}: zoetrope runs on cpu, cuda or mps")
    return device
