"""Where fine-tuning runs (training.devices): the CPU here, and the accelerate path, which
with one process must compute exactly what the plain path computes (same seed, same
losses, same weights). The GPU and multi-GPU paths are not run here: no GPU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_finetune import FAST, LABELS, corpus

from training import checkpoint
from training.devices import Placement, place
from training.finetune import train


def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_then():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert place("auto").device.type == "cpu" and place("auto").accelerator is None
    with pytest.raises(ValueError, match="no CUDA GPU"):
        place("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        place("tpu")


def test_shards_are_equal_disjoint_shares_of_the_batches():
    batches = list(range(11))
    shares = [Placement(torch.device("cpu"), None, k, 3).shard(batches) for k in range(3)]
    assert shares == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # 2 left over: every process syncs 3x
    assert Placement(torch.device("cpu"), None, 1, 3).steps_per_epoch(11) == 3
    assert Placement(torch.device("cpu")).shard(batches) == batches


def test_the_accelerate_path_gives_the_plain_seeded_result_on_cpu(tiny_encoder, tmp_path):
    config = replace(FAST, device="cpu", precision="fp32")
    plain = train(tiny_encoder, corpus(), LABELS, tmp_path / "plain", config=config, progress=False)
    accelerated = train(
        tiny_encoder,
        corpus(),
        LABELS,
        tmp_path / "acc",
        config=replace(config, accelerate=True),
        progress=False,
    )
    assert accelerated.losses == plain.losses
    assert accelerated.timings["device"] == "cpu" and accelerated.timings["processes"] == 1
    a = checkpoint.load(tmp_path / "plain", LABELS).model.state_dict()
    b = checkpoint.load(tmp_path / "acc", LABELS).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
