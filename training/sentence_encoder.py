"""The sentence encoder linking runs: all-MiniLM-L6-v2 as sentence-transformers runs it
(mean pooling over the attention mask, then L2 normalisation), for a taxonomy's labels
(batched by token count, in the precision asked) and for spans."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

EMBED_BATCH = 256
MAX_LABEL_TOKENS = 32


class SentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: mean pooling over the attention
    mask, then L2 normalisation. Loads any BERT-like folder (the tiny test model too)."""

    def __init__(self, folder: str | Path | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from training.checkpoint import resolve_source

        self.folder = Path(resolve_source(None if folder in (None, "backbone") else str(folder)))
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModel.from_pretrained(self.folder)
        self.model.eval()
        self._torch = torch
        self._int8 = None  # a dynamic-int8 copy of the model, made when first asked for

    def model_for(self, precision: str):
        """The model a precision runs: "int8" a copy with dynamic int8 Linear layers
        (training.precision.quantize_encoder; the fp32 model stays for spans and training),
        anything else the model itself."""
        if precision != "int8":
            return self.model
        if self._int8 is None:
            import copy

            from training.precision import quantize_encoder

            model = copy.deepcopy(self.model)
            self._int8 = model if quantize_encoder(model) else self.model
        return self._int8

    def key(self) -> str:
        """A hash of the weights: label embeddings are only reused for the same encoder."""
        digest = hashlib.sha256()
        for name in ("model.safetensors", "pytorch_model.bin", "config.json"):
            path = self.folder / name
            if path.is_file():
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        return digest.hexdigest()[:16]

    def forward(self, texts: Sequence[str], max_tokens: int):
        """Normalised embeddings as a torch tensor, with gradients if enabled (training)."""
        limit = min(max_tokens, self.tokenizer.model_max_length)
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt"
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self._torch.nn.functional.normalize(pooled, dim=-1)

    def encode(
        self,
        texts: Sequence[str],
        max_tokens: int = MAX_LABEL_TOKENS,
        batch_size: int = EMBED_BATCH,
        progress: bool = False,
        desc: str = "embedding",
        precision: str = "fp32",
        on_progress: Callable[[int, int], object] | None = None,
    ) -> np.ndarray:
        """Normalised embeddings, in `texts`' order. Texts are tokenized once and batched
        by token count, so a batch pads to its own longest text only (sorting by
        characters padded more); `precision` "bf16" runs the matrix products in bf16
        (autocast: fast where the CPU computes bf16 natively), "int8" on dynamic int8
        Linear layers (`model_for`). `on_progress(done, total)`
        after every batch."""
        from tqdm.auto import tqdm

        limit = min(max_tokens, self.tokenizer.model_max_length)
        model = self.model_for(precision)
        ids = self.tokenizer(list(texts), truncation=True, max_length=limit)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        autocast = self._torch.autocast(
            "cpu", dtype=self._torch.bfloat16, enabled=precision == "bf16"
        )
        with (
            self._torch.inference_mode(),
            autocast,
            tqdm(total=len(texts), disable=not progress, desc=desc, file=sys.stderr) as bar,
        ):
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                batch = self.tokenizer.pad(
                    {"input_ids": [ids[j] for j in idx]}, return_tensors="pt"
                )
                hidden = model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = self._torch.nn.functional.normalize(pooled, dim=-1).numpy()
                bar.update(len(idx))
                if on_progress is not None:
                    on_progress(min(i + batch_size, len(order)), len(order))
        return out
