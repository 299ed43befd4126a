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


@dataclass(frozen=True, slots=True)
class CpuInfo:
    model: str  # "AMD EPYC", "Intel(R) Xeon(R) Platinum 8481C", ...
    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", ...
    native_bf16: bool  # oneDNN computes bf16 matrix products natively
    threads: int  # torch intra-op threads at the time of asking
    cores: int  # CPUs this process may run on
    cpu_class: str  # one of CPU_CLASSES
    load_average: float  # 1-minute load when asked: above `cores`, others share the CPU

    def line(self) -> str:
        """One line for a benchmark's output."""
        return (
            f"CPU: {self.model}; torch capability {self.capability}; native bf16 "
            f"{'yes' if self.native_bf16 else 'no'}; class {self.cpu_class}; "
            f"torch threads {self.threads} of {self.cores} cores; "
            f"load average {self.load_average:.1f}"
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
        load_average=_load_average(),
    )


def _load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return float("nan")
