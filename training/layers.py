"""Label layers: labels grouped into layers whose spans may overlap, one encoder and one BIO
head (and CRF) per layer.

SkillSpan annotates Skill and Knowledge as two layers, and a Knowledge span may lie inside
a Skill span ("build data pipelines in Python" holding "Python"). A flat BIO tagger holds
one label per word, so it keeps the longer span (`training.text.resolve_overlaps`); a
project whose `[model] layers` groups its labels (`[["Skill"], ["Knowledge"]]`) trains a
`LayeredTokenClassifier` instead: each layer has its own tag set `tag_names(layer)`, its
own head and, with `crf`, its own CRF, all reading the same encoder states. The loss is
summed over the heads.

A layered checkpoint is the encoder as a plain transformers checkpoint (its config.json
carries `skillloop_layers` and `skillloop_crf`, which is how `training.checkpoint.load`
knows it), the tokenizer, and the heads and CRFs in `layer_heads.safetensors`.

Training targets travel through the flat trainer's `Example`s unchanged: each word's tags
(one per layer) are packed into one integer (`pack_targets`), unpacked by the model's
loss, so windows, batches and padding are exactly the flat tagger's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from training.crf import CRF, Transitions, word_emissions
from training.datasets import all_spans
from training.text import Document, tag_names
from training.train_examples import IGNORE, Example, make_examples
from training.windows import WindowConfig

LAYERS_KEY = "skillloop_layers"  # in the encoder's config.json: the label layers
CRF_KEY = "skillloop_crf"  # ... and whether every layer has a CRF
HEADS_FILE = "layer_heads.safetensors"
CRF_PREFIX = "crfs."  # parameter names of the layers' CRFs (their own learning rate)


def saved_layers(config: Any) -> list[list[str]] | None:
    """The label layers a checkpoint's transformers config records (None: a flat model)."""
    layers = getattr(config, LAYERS_KEY, None)
    return [list(layer) for layer in layers] if layers else None


def layer_documents(docs: Sequence[Document], layer: Sequence[str]) -> list[Document]:
    """The documents with the spans of one layer, overlaps with other layers kept: the
    full gold (`training.datasets.all_spans`, dropped spans restored) of that layer."""
    wanted = set(layer)
    return [
        replace(doc, spans=[s for s in all_spans(doc) if s.label in wanted], meta={})
        for doc in docs
    ]


def pack_targets(per_layer: Sequence[Sequence[int]], sizes: Sequence[int]) -> list[int]:
    """One integer per subword holding every layer's tag index (`IGNORE` stays IGNORE)."""
    packed = []
    for values in zip(*per_layer, strict=True):
        if values[0] == IGNORE:
            packed.append(IGNORE)
            continue
        code, scale = 0, 1
        for value, size in zip(values, sizes, strict=True):
            code, scale = code + value * scale, scale * size
        packed.append(code)
    return packed


def unpack_targets(packed: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Per layer, the tag index of each position (`IGNORE` where `packed` has it)."""
    ignore = packed == IGNORE
    out, scale = [], 1
    for size in sizes:
        layer = torch.div(packed.clamp(min=0), scale, rounding_mode="floor") % size
        out.append(torch.where(ignore, torch.full_like(packed, IGNORE), layer))
        scale *= size
    return out


def make_layered_examples(
    tokenizer: Any,
    docs: Sequence[Document],
    layers: Sequence[Sequence[str]],
    window: WindowConfig,
) -> list[Example]:
    """The flat trainer's examples (same windows), each subword's target packing one tag
    per layer."""
    per_layer = [
        make_examples(tokenizer, layer_documents(docs, layer), layer, window) for layer in layers
    ]
    sizes = [len(tag_names(layer)) for layer in layers]
    return [
        Example(group[0].input_ids, pack_targets([e.labels for e in group], sizes))
        for group in zip(*per_layer, strict=True)
    ]


@dataclass
class LayeredOutput:
    logits: torch.Tensor  # (batch, width, sum of the layers' tags): the heads side by side
    layer_logits: list[torch.Tensor]
    loss: torch.Tensor | None = None
    hidden_states: Any = None


class LayeredTokenClassifier(torch.nn.Module):
    """An encoder with one linear BIO head (and optionally one CRF) per label layer."""

    encoder: Any  # a transformers encoder (AutoModel)
    config: Any
    crfs: torch.nn.ModuleList | None

    def __init__(self, encoder: Any, layers: Sequence[Sequence[str]], crf: bool):
        super().__init__()
        self.encoder = encoder
        self.layers = [list(layer) for layer in layers]
        self.layer_tags = [tag_names(layer) for layer in self.layers]
        self.sizes = [len(tags) for tags in self.layer_tags]
        hidden: int = encoder.config.hidden_size
        rate: Any = getattr(encoder.config, "classifier_dropout", None)
        if rate is None:
            rate = getattr(encoder.config, "hidden_dropout_prob", 0.1)
        self.dropout = torch.nn.Dropout(float(rate))
        std = getattr(encoder.config, "initializer_range", 0.02)
        heads = [torch.nn.Linear(hidden, n) for n in self.sizes]
        for head in heads:
            torch.nn.init.normal_(head.weight, 0.0, std)
            torch.nn.init.zeros_(head.bias)
        self.heads = torch.nn.ModuleList(heads)
        self.crfs = torch.nn.ModuleList(CRF(tags) for tags in self.layer_tags) if crf else None
        # the union tag space a merged prediction speaks (`Tagger` checks num_labels on it)
        labels = [label for layer in self.layers for label in layer]
        self.config = copy.deepcopy(encoder.config)
        self.config.num_labels = len(tag_names(labels))

    @property
    def base_model(self) -> torch.nn.Module:
        return self.encoder

    def set_attn_implementation(self, implementation: str) -> None:
        """The encoder's attention implementation (the ONNX export's fused precisions ask
        for "eager", `training.onnx_runtime.export`)."""
        self.encoder.set_attn_implementation(implementation)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **_: Any,
    ) -> LayeredOutput:
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
        )
        states = self.dropout(out.last_hidden_state)
        logits = [head(states) for head in self.heads]
        loss = None if labels is None else self.loss(logits, labels)
        return LayeredOutput(torch.cat(logits, dim=-1), logits, loss, out.hidden_states)

    def loss(self, logits: list[torch.Tensor], packed: torch.Tensor) -> torch.Tensor:
        """The sum over layers of each head's loss (the CRF's per-word NLL, or the mean
        cross-entropy over words)."""
        total = logits[0].new_zeros((), dtype=torch.float32)
        for i, targets in enumerate(unpack_targets(packed, self.sizes)):
            if self.crfs is None:
                total = total + torch.nn.functional.cross_entropy(
                    logits[i].float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE
                )
                continue
            emissions, tags, mask = word_emissions(logits[i].float(), targets, IGNORE)
            crf: Any = self.crfs[i]
            total = total + crf.nll(emissions, tags, mask) / mask.sum().clamp(min=1)
        return total

    def transitions(self) -> list[Transitions | None]:
        """Each layer's CRF scores (None per layer without a CRF)."""
        if self.crfs is None:
            return [None] * len(self.layers)
        return [crf.transitions() for crf in self.crfs if isinstance(crf, CRF)]

    def save_pretrained(self, folder: str | Path) -> None:
        """The encoder as a transformers checkpoint recording the layers, and the heads."""
        from safetensors.torch import save_file

        config = self.encoder.config
        setattr(config, LAYERS_KEY, self.layers)
        setattr(config, CRF_KEY, self.crfs is not None)
        self.encoder.save_pretrained(folder)
        state = {
            name: (tensor.detach().float() if tensor.is_floating_point() else tensor).contiguous()
            for name, tensor in self.state_dict().items()
            if not name.startswith("encoder.")
        }
        save_file(state, str(Path(folder) / HEADS_FILE))


class HeadView(torch.nn.Module):
    """One layer's head seen as a token classifier (what a per-layer `Tagger` wraps: its
    config has that layer's tags; its forward runs the encoder and that head)."""

    config: Any

    def __init__(self, net: LayeredTokenClassifier, index: int):
        super().__init__()
        self.net = net
        self.index = index
        self.config = copy.deepcopy(net.encoder.config)
        self.config.num_labels = net.sizes[index]

    def forward(self, **inputs: Any) -> LayeredOutput:
        out = self.net(**inputs)
        return replace(out, logits=out.layer_logits[self.index])


def build_network(
    name: str,
    config: Any,
    layers: Sequence[Sequence[str]],
    crf: bool,
    allow_new_labels: bool,
) -> tuple[LayeredTokenClassifier, list[str]]:
    """The layered model for `layers` from checkpoint `name`: a layered checkpoint's heads
    when its layers are these, else fresh heads (only with `allow_new_labels`) on its
    encoder. Also the tags that got fresh heads. Raises ValueError when it cannot serve."""
    from transformers import AutoModel

    saved = saved_layers(config)
    heads = Path(name) / HEADS_FILE
    same = saved == [list(layer) for layer in layers] and heads.is_file()
    if not same and not allow_new_labels:
        raise ValueError(
            f"{name} was trained for the label layers {saved}, not {list(map(list, layers))}"
        )
    # BERT-like encoders build a pooler that a tagger never uses (it would train nothing)
    pooler = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta") else {}
    encoder = AutoModel.from_pretrained(name, **pooler)
    has_crf = bool(getattr(config, CRF_KEY, False)) if same else crf
    net = LayeredTokenClassifier(encoder, layers, has_crf)
    if same:
        from safetensors.torch import load_file

        missing, unexpected = net.load_state_dict(load_file(str(heads)), strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise ValueError(f"{heads} does not match its layers: {missing or unexpected}")
        return net.eval(), []
    return net.eval(), [tag for tags in net.layer_tags for tag in tags]


def layer_temperatures(calibration: dict, n: int) -> list[float]:
    """Each layer's fitted temperature from a checkpoint's "calibration" (1.0 if none)."""
    values = calibration.get("temperatures") or [calibration.get("temperature", 1.0)] * n
    if len(values) != n or not all(
        isinstance(t, int | float) and t > 0 and math.isfinite(t) for t in values
    ):
        return [1.0] * n
    return [float(t) for t in values]
