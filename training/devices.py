"""Where fine-tuning runs: the device (a CUDA GPU when one is present, else the CPU), and
Hugging Face accelerate for several GPUs (`accelerate launch`: data-parallel) and mixed
precision.

    placement = place(config.device, config.accelerate)

Data-parallel without wrapping the model: every process draws the same seeded batch
order, takes its own equal share of the batches (`shard`), and after each backward pass
the gradients of everything the optimizer updates (the encoder and the CRF's scores) are
averaged over the processes (`sync_gradients`), so every process makes the same update
and holds the same weights; only the main process saves. With one process (the CPU, or one
GPU) `shard` and `sync_gradients` change nothing, so the accelerate path computes what the
plain path computes, step for step (tests/test_devices.py pins it on CPU).

Mixed precision is bf16 autocast (weights and optimizer stay fp32): on a GPU that computes
bf16 (Ampere and later), or on a CPU with native bf16 (`training.precision`). fp16 (which
needs a loss scaler) is not used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

DEVICES = ("auto", "cpu", "cuda")
T = TypeVar("T")


def cuda_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def launched_distributed() -> bool:
    """Started by `accelerate launch` (or torchrun) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """The first process of a launch (the only one when not launched), the one that saves."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Placement:
    device: torch.device
    accelerator: Any = None  # an accelerate.Accelerator, or None for the plain path
    process_index: int = 0
    num_processes: int = 1

    @property
    def is_main(self) -> bool:
        return self.process_index == 0

    def bf16(self, precision: str) -> bool:
        """Whether to train under bf16 autocast for the config's `precision`."""
        from training.precision import native_bf16

        if precision != "auto":
            return precision == "bf16"
        return cuda_bf16() if self.device.type == "cuda" else native_bf16()

    def autocast(self, enabled: bool) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def to_device(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            return tensors
        return {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}

    def shard(self, batches: Sequence[T]) -> list[T]:
        """This process's share of an epoch's batches: equal shares (a remainder of fewer
        than `num_processes` batches is dropped, so every process syncs as often)."""
        if self.num_processes == 1:
            return list(batches)
        per = len(batches) // self.num_processes
        start = self.process_index * per
        return list(batches[start : start + per])

    def steps_per_epoch(self, n_batches: int) -> int:
        return n_batches if self.num_processes == 1 else n_batches // self.num_processes

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is not None:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def sync_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Average the gradients over the processes (nothing to do with one)."""
        if self.num_processes == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.num_processes
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    @contextlib.contextmanager
    def on_cpu(self, module: torch.nn.Module) -> Iterator[None]:
        """Run CPU code (the serving tagger, for dev scores) on a module trained elsewhere."""
        if self.device.type == "cpu":
            yield
            return
        module.to("cpu")
        try:
            yield
        finally:
            module.to(self.device)


def place(device: str = "auto", accelerate: bool = False) -> Placement:
    """Where to train: `device` "auto" is the GPU when CUDA is available, else the CPU.
    With `accelerate` (or under a multi-process `accelerate launch`) the device, process
    index and count come from accelerate's Accelerator."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {DEVICES}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU")
    if accelerate or launched_distributed():
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=device == "cpu", mixed_precision="no")
        return Placement(
            accelerator.device, accelerator, accelerator.process_index, accelerator.num_processes
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Placement(torch.device(device))
