"""What is done to a transformer, for the benchmark's positives and nulls: fine-tuning (every weight, or LoRA
adapters merged back), pruning of attention heads and MLP units, int8 weights, distillation into a smaller
encoder, and, as the null, encoders initialised and trained independently.

The pruning functions read a model through ``view``, so they act on modelprint's nets and on BERTs alike; the
training recipes are for text encoders (``SentenceEncoder``). Every recipe is deterministic given its seed.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .text import SentenceEncoder, corpus, pairs
from .view import view

TRAIN_TOKENS = 32  # sentences are cut shorter for training than for comparing: a CPU's budget


# --- pruning and quantisation (any transformer modelprint can view) ---------------------------------------


@torch.no_grad()
def prune_heads(module: nn.Module, amount: float) -> nn.Module:
    """Zero the ``amount`` fraction of attention heads (over all blocks) whose value-output circuit has the least
    weight (product of the head's value rows' and output columns' norms), in place."""
    _check_amount(amount)
    v, scored = view(module), []
    for layer in v.layers:
        d = layer.query.out_features // layer.heads
        for h in range(layer.heads):
            sl = slice(h * d, (h + 1) * d)
            importance = layer.value.weight[sl].norm() * layer.output.weight[:, sl].norm()
            scored.append((float(importance), layer, sl))
    for _, layer, sl in sorted(scored, key=lambda s: s[0])[: round(amount * len(scored))]:
        for lin in (layer.query, layer.key, layer.value):
            lin.weight[sl] = 0
            lin.bias[sl] = 0
        layer.output.weight[:, sl] = 0
    return module


@torch.no_grad()
def prune_units(module: nn.Module, amount: float) -> nn.Module:
    """Zero the ``amount`` fraction of each block's MLP units with the least weight (norm of the unit's input row
    times its output column), in place."""
    _check_amount(amount)
    for layer in view(module).layers:
        importance = layer.up.weight.norm(dim=1) * layer.down.weight.norm(dim=0)
        drop = importance.argsort()[: round(amount * len(importance))]
        layer.up.weight[drop] = 0
        layer.up.bias[drop] = 0
        layer.down.weight[:, drop] = 0
    return module


def _check_amount(amount: float) -> None:
    if not 0 <= amount < 1:
        raise ConfigError(f"a pruned fraction is in [0, 1), got {amount}")


@torch.no_grad()
def quantize_int8(module: nn.Module) -> nn.Module:
    """Symmetric per-output-channel int8 weights of every linear layer, stored dequantised, in place."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            scale = m.weight.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
            m.weight.copy_((m.weight / scale).round().clamp(-127, 127) * scale)
    return module


# --- training recipes for text encoders -------------------------------------------------------------------


def _batches(items: list, batch: int, steps: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch:
            order += torch.randperm(len(items), generator=gen).tolist()
        yield [items[i] for i in order[:batch]]
        del order[:batch]


def _tokens(encoder: SentenceEncoder, texts: list[str]) -> dict[str, torch.Tensor]:
    batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=TRAIN_TOKENS, return_tensors="pt")
    device = next(encoder.parameters()).device
    return {k: v.to(device) for k, v in batch.items()}


def finetune(
    encoder: SentenceEncoder,
    seed: int,
    steps: int = 60,
    lr: float = 5e-5,
    batch: int = 16,
    lora: int = 0,
    split: str = "attacker",
    temperature: float = 0.05,
) -> SentenceEncoder:
    """A copy fine-tuned for retrieval on ``split``: neighbouring sentences are positives, the rest of the batch
    negatives (in-batch contrastive loss, as sentence-transformers trains). ``lora=r`` trains rank-r LoRA adapters
    on the query and value projections instead (Hu et al. 2022, with ``peft``) and merges them into the weights."""
    model = copy.deepcopy(encoder)
    bert = model.bert
    if lora:
        from peft import LoraConfig, get_peft_model

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            bert = get_peft_model(bert, LoraConfig(r=lora, lora_alpha=2 * lora, target_modules=["query", "value"]))
        model.bert = bert
    _contrastive(model, pairs(split), steps, lr * (20 if lora else 1), batch, seed, temperature)  # adapters start at 0
    if lora:
        model.bert = bert.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def _contrastive(model, positives, steps: int, lr: float, batch: int, seed: int, temperature: float = 0.05):
    """In-batch contrastive training of ``model`` (symmetric InfoNCE over pairs of positives)."""
    import warnings

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
        torch.manual_seed(seed)  # dropout
        for chunk in _batches(positives, batch, steps, seed):
            a = model(**_tokens(model, [p[0] for p in chunk]))
            b = model(**_tokens(model, [p[1] for p in chunk]))
            logits = a @ b.T / temperature
            labels = torch.arange(len(chunk), device=logits.device)
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _config(encoder: SentenceEncoder | None = None, **changes):
    from transformers import BertConfig

    base = encoder.bert.config.to_dict() if encoder is not None else {}
    return BertConfig(**{**base, **changes})


def distill(
    teacher: SentenceEncoder, seed: int, layers: int = 3, steps: int = 150, lr: float = 3e-4, batch: int = 32
) -> SentenceEncoder:
    """A student of ``layers`` blocks (the teacher's width and tokenizer, its own random initialisation) trained
    to reproduce the teacher's embeddings (mean squared error, as sentence-transformers distils) on the thief's text
    and the training text: a copy of the function in a smaller transformer, sharing no weight."""
    from transformers import BertModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        student = SentenceEncoder(BertModel(_config(teacher, num_hidden_layers=layers), add_pooling_layer=False),
                                  teacher.tokenizer, f"distilled({teacher.name})")  # fmt: skip
    texts = corpus("attacker") + corpus("train")
    opt = torch.optim.AdamW(student.parameters(), lr=lr)
    student.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for chunk in _batches(texts, batch, steps, seed):
            tokens = _tokens(teacher, chunk)
            with torch.no_grad():
                target = teacher.eval()(**tokens)
            loss = F.mse_loss(student(**tokens), target) * target.shape[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return student.eval()


def independent(seed: int, like: SentenceEncoder, steps: int = 100, lr: float = 3e-4, batch: int = 16, **config):
    """An encoder of ``like``'s architecture (or changed by ``config``: ``num_hidden_layers=4``, ...) and tokenizer,
    initialised from ``seed`` and trained from scratch for retrieval on the training text (the fine-tune's recipe
    on another split): the null of the white-box and black-box comparisons, sharing nothing with ``like`` but its
    shape and vocabulary."""
    from transformers import BertModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bert = BertModel(_config(like, **config), add_pooling_layer=False)
    model = SentenceEncoder(bert, like.tokenizer, f"independent({seed})")
    return _contrastive(model, pairs("train"), steps, lr, batch, seed)


# --- derivations by expression ----------------------------------------------------------------------------


def _copy_then(fn):
    return lambda e, *args, **kw: fn(copy.deepcopy(e), *args, **kw)


def _lora(e, seed: int, rank: int = 8, steps: int = 60):
    return finetune(e, seed, steps, lora=rank)


def _quantize(e, mode: str = "int8"):
    if mode != "int8":
        raise ConfigError(f"an encoder is quantised to int8, not {mode!r}")
    return quantize_int8(copy.deepcopy(e))


def _steps() -> dict:
    from .symmetry import permute, rotate

    return {"finetune": finetune, "lora": _lora, "permute": _copy_then(permute), "rotate": _copy_then(rotate),
            "prune_heads": _copy_then(prune_heads), "prune_units": _copy_then(prune_units), "quantize": _quantize,
            "distill": distill, "independent": lambda e, seed, **kw: independent(seed, e, **kw)}  # fmt: skip


def parse(expr: str) -> list[tuple[str, list, dict]]:
    """The steps of ``expr``, every name checked (before an encoder is loaded or the first step runs)."""
    from ..lineage.expr import parse_steps

    chain, known = parse_steps(expr), _steps()
    for name, _, _ in chain:
        if name not in known:
            raise ConfigError(f"unknown encoder step {name!r}; known: {', '.join(known)}")
    return chain


def derive(encoder: SentenceEncoder, expr: str) -> SentenceEncoder:
    """``encoder`` through the steps of ``expr``, e.g. ``"finetune(0)->permute(1)->rotate(2)"``: finetune(seed,
    steps=, lr=), lora(seed, rank=, steps=), permute(seed), rotate(seed), prune_heads(amount), prune_units(amount),
    quantize(int8), distill(seed, layers=, steps=), independent(seed, steps=, num_hidden_layers=, ...)."""
    steps, out = _steps(), encoder
    for name, args, kwargs in parse(expr):
        try:
            out = steps[name](out, *args, **kwargs)
        except TypeError as e:
            raise ConfigError(f"{name}{tuple(args)}: {e}") from None
    out.name = f"{encoder.name}->{expr}"
    return out
