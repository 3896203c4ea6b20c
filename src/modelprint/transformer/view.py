"""One view of a transformer's weights and activations, whatever wrote it: modelprint's pre-LayerNorm ``Transformer``
(``vit``, ``seqformer``) and Hugging Face's post-LayerNorm BERT (MiniLM and other encoders). The symmetries and
the white-box comparisons read and change a model only through this view.

Inputs are a float tensor for modelprint's nets and a tokenised batch (``input_ids``, ``attention_mask``, ...)
for a BERT; activations are returned for real tokens only (padding dropped), one row per token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError


@dataclass
class Layer:
    """The weights of one block. ``attn_norm``/``mlp_norm``: the LayerNorms whose output the attention and the
    MLP read (pre-LN: the block's own; post-LN: the one that closed the previous sub-layer); ``residual``: the module
    whose input is the stream the MLP's output is added to."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear
    up: nn.Linear
    down: nn.Linear
    heads: int
    attn_norm: nn.Module
    mlp_norm: nn.Module
    residual: nn.Module
    block: nn.Module


@dataclass
class View:
    module: nn.Module
    layers: list[Layer]
    post_ln: bool  # BERT: the stream is a LayerNorm's output; pre-LN: the raw residual sum
    stream_writers: list[nn.Module]  # modules whose outputs are added to the stream (Linear, Embedding)
    stream_readers: list[nn.Linear]  # linear layers that read the stream (after its norm, for pre-LN)
    final_norm: nn.Module | None  # pre-LN: the norm before the head
    first: nn.Module  # the module whose input (pre-LN) or output (post-LN) is the embedding's stream

    @property
    def width(self) -> int:
        return self.layers[0].query.in_features

    def norms(self) -> list[nn.Module]:
        """Every LayerNorm on the stream, in order."""
        out = [self.first] if self.post_ln else []
        for layer in self.layers:
            out += [layer.mlp_norm, layer.block.output.LayerNorm] if self.post_ln else [layer.attn_norm, layer.mlp_norm]
        return out + ([self.final_norm] if self.final_norm is not None else [])

    def run(self, inputs) -> torch.Tensor:
        """The module's output on ``inputs`` (the last hidden state for a BERT)."""
        if isinstance(inputs, Mapping):
            return self.module(**inputs).last_hidden_state
        return self.module(inputs)

    @torch.no_grad()
    def activations(self, inputs, what: tuple[str, ...] = ("up", "residual", "hidden", "embedding")) -> dict:
        """Per layer, on real tokens: ``up`` the MLP's pre-activations (tokens, units), ``residual`` the stream the
        MLP's output joins (tokens, width), ``hidden`` the block's output; ``embedding`` the stream the first block
        reads. Each a float64 matrix with one row per token; ``sample``: the input each row belongs to."""
        keep = inputs["attention_mask"].bool() if isinstance(inputs, Mapping) else None
        out: dict[str, list[torch.Tensor]] = {k: [] for k in what}

        def rows(t: torch.Tensor) -> torch.Tensor:
            nonlocal keep
            if keep is None:  # a tensor batch: every token is real
                keep = torch.ones(t.shape[:2], dtype=torch.bool)
            return t.detach().double()[keep.to(t.device)].cpu()

        hooks = []
        for layer in self.layers:
            if "up" in what:
                hooks.append(layer.up.register_forward_hook(lambda _m, _i, o: out["up"].append(rows(o))))
            if "residual" in what:
                hooks.append(layer.residual.register_forward_pre_hook(lambda _m, i: out["residual"].append(rows(i[0]))))
            if "hidden" in what:
                hooks.append(layer.block.register_forward_hook(lambda _m, _i, o: out["hidden"].append(rows(_first(o)))))
        if "embedding" in what:
            if self.post_ln:
                hooks.append(self.first.register_forward_hook(lambda _m, _i, o: out["embedding"].append(rows(o))))
            else:
                hooks.append(self.first.register_forward_pre_hook(lambda _m, i: out["embedding"].append(rows(i[0]))))
        was = self.module.training
        self.module.eval()
        try:
            self.run(inputs)
        finally:
            self.module.train(was)
            for h in hooks:
                h.remove()
        if "sample" in what:
            out["sample"] = keep.nonzero()[:, 0].cpu()
        return {k: (v[0] if k == "embedding" else v) for k, v in out.items()}


def _first(o):
    return o[0] if isinstance(o, tuple | list) else o


def view(module: nn.Module) -> View:
    """The view of ``module``: a modelprint ``Transformer`` or a Hugging Face BERT (``BertModel``, or a module
    holding one as ``.bert``); anything else is refused with what is supported."""
    from ..nets.transformer import Transformer

    if isinstance(module, Transformer):
        return _own(module)
    bert = getattr(module, "bert", module)
    if type(bert).__name__ == "BertModel":
        return _bert(bert)
    raise ConfigError(
        f"{type(module).__name__} is not a transformer modelprint can read: modelprint's vit/seqformer nets and "
        "Hugging Face BERT encoders (MiniLM) are"
    )


def is_transformer(module: nn.Module) -> bool:
    try:
        view(module)
    except ConfigError:
        return False
    return True


def _own(net) -> View:
    layers = [
        Layer(b.attn.query, b.attn.key, b.attn.value, b.attn.output, b.up, b.down, b.attn.heads, b.ln1, b.ln2, b.ln2, b)
        for b in net.blocks
    ]
    readers = [m for b in net.blocks for m in (b.attn.query, b.attn.key, b.attn.value, b.up)] + [net.head]
    writers = [net.embed] + [m for b in net.blocks for m in (b.attn.output, b.down)]
    return View(net, layers, False, writers, readers, net.norm, net.blocks[0])


def _bert(bert) -> View:
    layers = []
    for block in bert.encoder.layer:
        att = block.attention
        layers.append(
            Layer(
                att.self.query,
                att.self.key,
                att.self.value,
                att.output.dense,
                block.intermediate.dense,
                block.output.dense,
                bert.config.num_attention_heads,
                None,
                att.output.LayerNorm,
                block.intermediate.dense,
                block,
            )  # fmt: skip
        )
    for i, layer in enumerate(layers):  # post-LN: attention reads the norm that closed the previous block
        layer.attn_norm = bert.embeddings.LayerNorm if i == 0 else bert.encoder.layer[i - 1].output.LayerNorm
    emb = bert.embeddings
    writers = [emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings]
    writers += [m for layer in layers for m in (layer.output, layer.down)]
    readers = [m for layer in layers for m in (layer.query, layer.key, layer.value, layer.up)]
    if getattr(bert, "pooler", None) is not None:
        readers.append(bert.pooler.dense)
    return View(bert, layers, True, writers, readers, None, emb.LayerNorm)
