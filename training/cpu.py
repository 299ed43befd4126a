"""What CPU this process runs on, as benchmarks print it and `precision="auto"` reads it.

Speed figures differ by CPU class far more than by anything else measured here: a CPU that
computes bf16 natively (AVX512-BF16 or AMX) runs the tagger about 2x faster in bf16 than in
fp32, while on an AVX2-only CPU bf16 is emulated and slow, and int8 through ONNX Runtime is
the fast path (docs/tagger.md). So every figure says which class it was measured on.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

# cpu_class values: bf16 computed natively; AVX2 (or AVX512 without bf16) only; anything else
CPU_CLASSES = ("bf16", "avx2", "other")
# Inside the bf16 class two machines differ about 2x in training and prediction speed
# (docs/training.md): AMX tiles (Intel Sapphire Rapids on) or AVX512-BF16 vector
# instructions alone (AMD Zen 4, Intel Cooper Lake). Read from the kernel's CPU flags.
BF16_UNITS = ("amx", "avx512-bf16", "none")
# Variables that hold torch's own kernels, oneDNN and MKL below what the CPU can do: set
# together, they make a faster CPU compute as an AVX2-only one would (an emulation on the
# same cores, not that machine: its clocks and caches differ), and every line says so.
ISA_CAPS = (
    "ATEN_CPU_CAPABILITY",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
)
BF16_UNIT_NAMES = {
    "amx": "AMX",
    "avx512-bf16": "AVX512-BF16, no AMX",
    "none": "no bf16 unit",
}


@dataclass(frozen=True, slots=True)
class CpuInfo:
    model: str  # "AMD EPYC", "Intel(R) Xeon(R) Platinum 8481C", ...
    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", ...
    native_bf16: bool  # oneDNN computes bf16 matrix products natively
    threads: int  # torch intra-op threads at the time of asking
    cores: int  # CPUs this process may run on
    cpu_class: str  # one of CPU_CLASSES
    bf16_unit: str  # one of BF16_UNITS: what computes bf16 inside the "bf16" class
    load_average: float  # 1-minute load when asked: above `cores`, others share the CPU
    isa_caps: str = ""  # the ISA_CAPS variables set, "NAME=value ...": an emulated class

    def line(self) -> str:
        """One line for a benchmark's output."""
        return (
            f"CPU: {self.model}; torch capability {self.capability}; native bf16 "
            f"{'yes' if self.native_bf16 else 'no'}; class {self.cpu_class} "
            f"({BF16_UNIT_NAMES[self.bf16_unit]}); "
            f"torch threads {self.threads} of {self.cores} cores; "
            f"load average {self.load_average:.1f}"
            + (f"; ISA capped by {self.isa_caps} (emulated on this CPU)" if self.isa_caps else "")
        )

    def as_dict(self) -> dict:
        return asdict(self)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (else bf16 is emulated, slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def cpu_class() -> str:
    """ "bf16" where bf16 is native, "avx2" for x86 CPUs with AVX2 or AVX512 but no native
    bf16, "other" for the rest (Arm, old x86): the key of `precision="auto"`'s choice."""
    if native_bf16():
        return "bf16"
    if capability().upper().startswith("AVX"):
        return "avx2"
    return "other"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_info() -> CpuInfo:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return CpuInfo(
        model=cpu_model(),
        capability=capability(),
        native_bf16=native_bf16(),
        threads=torch.get_num_threads(),
        cores=cores,
        cpu_class=cpu_class(),
        bf16_unit=bf16_unit(),
        load_average=_load_average(),
        isa_caps=isa_caps(),
    )


def isa_caps() -> str:
    """The ISA_CAPS variables this process runs under, as one string ("" when none)."""
    return " ".join(f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name))


def cpu_flags() -> frozenset[str]:
    """The kernel's flags for the first CPU ("avx2", "avx512_bf16", "amx_bf16", ...)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def bf16_unit(flags: frozenset[str] | None = None) -> str:
    """ "amx" where AMX tiles compute bf16, "avx512-bf16" where only the AVX512 bf16
    instructions do, "none" otherwise (bf16 emulated, or a CPU whose flags are unknown)."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    return "none"


def _load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return float("nan")
