"""Watermarks for diffusion models (unconditional ``diffusers`` UNets), planted by the owner and read
white-box from the suspect's weights.

- ``aiao``: a **reconstruction** of AIAO ("Lazy Layers to Make Fine-Tuned Diffusion Models More Traceable",
  arXiv 2405.00466) from its abstract alone; the method section and code are not public. What the abstract
  states is followed: fine-tuning changes a few *busy* blocks a lot and leaves *lazy* ones nearly untouched
  (``profile`` measures it); the watermark is a backdoor in the *feature space* of *subpaths* (entry block →
  exit block) sampled among lazy blocks; a *mask-controlled trigger* lives in a secret subset of the entry
  block's channels, so normal generation never meets it; verification samples many subpaths (Monte Carlo) and
  reports the fraction verified. The details are ours: the trigger adds ``strength`` feature standard deviations
  times a secret sign pattern to the masked channels of the entry block's output; the response is the change
  this causes in the masked channels of the exit block, scored by its cosine with a secret sign pattern;
  only the lazy blocks are trained.
- ``trigger-noise``: the input/output-space baseline (Zhao et al. 2023, "A Recipe for Watermarking Diffusion
  Models", trigger → target image): a secret initial noise from which DDIM must generate a secret target
  image. It is trained with the denoising loss on the pair (target, trigger noise), whose DDIM path is the
  straight line between them.

Both are embedded with the same loss, denoising on clean data + watermark + fidelity to the original model's
noise predictions, and verified the same way: each Monte Carlo trial gives a score, a trial succeeds above a
threshold calibrated on clean models, and the success rate is tested against the clean models' rates.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import container, diffusion
from ..base import Params, Registry
from ..decide import check_alpha, decide, describe_null, rate_null
from ..digest import module_digest
from ..errors import AccessError, ConfigError, FileFormatError
from ..verdict import Verdict
from .blocks import Profile, blocks, profile, run_blocks

__all__ = [
    "DIFFUSION_WATERMARKS",
    "AIAO",
    "DiffusionKey",
    "Profile",
    "TriggerNoise",
    "blocks",
    "calibrate",
    "embed",
    "profile",
    "verify",
]

DIFFUSION_WATERMARKS: Registry[DiffusionWatermark] = Registry("diffusion watermark")

# A trial succeeds when its score exceeds the clean models' mean by this many standard deviations.
SIGMAS = 4.0


def _secret(key_seed: int, block: str, role: str, shape: Sequence[int], fraction: float) -> torch.Tensor:
    """A sign pattern of ``shape`` (C, ...) on a secret ``fraction`` of the channels, zero elsewhere: a pure
    function of the key seed, the block and the role ("trigger" or "response")."""
    digest = hashlib.sha256(f"modelprint-aiao/{key_seed}/{block}/{role}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    channels = torch.randperm(shape[0], generator=gen)[: max(1, round(fraction * shape[0]))]
    mask = torch.zeros(shape[0], *[1] * (len(shape) - 1))
    mask[channels] = 1
    return (torch.randint(0, 2, tuple(shape), generator=gen) * 2 - 1).float() * mask


class DiffusionWatermark(Params):
    """A diffusion watermark: the key ``material`` it draws, the parameters it trains, its loss on a training
    batch (``weight``: its default weight against the denoising loss), and the score of each Monte Carlo
    trial on a suspect."""

    weight: float = 1.0
    material_keys: tuple[str, ...] = ()  # the tensors ``material`` returns, which a key file must hold

    def for_unet(self, unet) -> DiffusionWatermark:
        return self

    def material(self, unet, x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def trainable(self, unet) -> list[nn.Parameter]:
        return list(unet.parameters())

    def step(self, unet, key: DiffusionKey, x_t, t, gen) -> tuple[torch.Tensor, torch.Tensor]:
        """The noise prediction on the clean batch and the watermark loss, from one forward pass."""
        raise NotImplementedError

    def scores(self, unet, key: DiffusionKey, trials: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1), b.reshape(1, -1), dim=1, eps=1e-12)


@DIFFUSION_WATERMARKS.register("aiao")
class AIAO(DiffusionWatermark):
    """Feature-space backdoors on subpaths between ``blocks`` ('+'-separated names; "" = every block; pass
    ``"+".join(profile(...).lazy())``). ``mask``: the fraction of channels trigger and response live in;
    ``strength``: the trigger's size in feature standard deviations; ``rows``: triggered rows per batch."""

    material_keys = ("inputs", "scale")

    def __init__(self, blocks: str = "", mask: float = 0.25, strength: float = 2.0, rows: int = 8):
        if not 0 < mask <= 1 or strength <= 0 or rows < 1:
            raise ConfigError(f"aiao needs 0 < mask <= 1, strength > 0 and rows >= 1, got {mask}, {strength}, {rows}")
        self.blocks, self.mask, self.strength, self.rows = blocks, mask, strength, rows

    def for_unet(self, unet) -> AIAO:
        order = blocks(unet)
        wanted = self.blocks.split("+") if self.blocks else order
        if unknown := [b for b in wanted if b not in order]:
            raise ConfigError(f"aiao: the UNet has no blocks {unknown}; it has {order}")
        picked = [b for b in order if b in wanted]
        if len(picked) < 2:
            raise ConfigError("aiao needs at least 2 blocks to run subpaths between")
        return AIAO("+".join(picked), self.mask, self.strength, self.rows)

    @property
    def paths(self) -> list[tuple[str, str]]:
        names = self.blocks.split("+")
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]

    def material(self, unet, x, gen):
        refs = x[torch.randperm(len(x), generator=gen)[:32]]
        x_t, _, t = diffusion.noisy(refs.to(next(unet.parameters()).device), gen)
        names = self.blocks.split("+")
        with torch.no_grad():
            _, out = run_blocks(unet, x_t, t, keep=names)
        return {"inputs": refs, "scale": torch.tensor([float(out[n].std()) for n in names])}

    def trainable(self, unet):
        return [p for b in self.blocks.split("+") for p in unet.get_submodule(b).parameters()]

    def _run(self, unet, key, x_t, t, paths: list[tuple[str, str]]):
        """One forward pass of the clean batch plus one triggered copy of row i for each path i: the clean
        prediction and each path's response score (cosine of the masked exit change with its secret)."""
        n, k = len(x_t), len(paths)
        scale = dict(zip(self.blocks.split("+"), key.tensors["scale"].tolist(), strict=True))
        rows: dict[str, list[int]] = {}
        for i, (a, _) in enumerate(paths):
            rows.setdefault(a, []).append(n + i)

        def trigger(block):
            def delta(out):
                pattern = _secret(key.key_seed, block, "trigger", out.shape[1:], self.mask).to(out)
                d = torch.zeros_like(out)
                d[rows[block]] = self.strength * scale[block] * pattern
                return d

            return delta

        eps, out = run_blocks(
            unet, torch.cat([x_t, x_t[:k]]), torch.cat([t, t[:k]]),
            add={a: trigger(a) for a in rows}, keep=sorted({b for _, b in paths}),
        )  # fmt: skip
        scores = []
        for i, (_, b) in enumerate(paths):
            secret = _secret(key.key_seed, b, "response", out[b].shape[1:], self.mask).to(out[b])
            change = (out[b][n + i] - out[b][i]) * (secret != 0)
            scores.append(_cosine(change[None], secret)[0])
        return eps[:n], torch.stack(scores)

    def step(self, unet, key, x_t, t, gen):
        paths = [self.paths[int(i)] for i in torch.randint(len(self.paths), (min(self.rows, len(x_t)),), generator=gen)]
        eps, scores = self._run(unet, key, x_t, t, paths)
        return eps, (1 - scores).mean()

    @torch.no_grad()
    def scores(self, unet, key, trials, gen):
        refs, out = key.tensors["inputs"], []
        for start in range(0, trials, 64):  # bounded batches for large UNets
            k = min(64, trials - start)
            paths = [self.paths[int(i)] for i in torch.randint(len(self.paths), (k,), generator=gen)]
            x0 = refs[torch.randint(len(refs), (k,), generator=gen)].to(next(unet.parameters()).device)
            x_t, _, t = diffusion.noisy(x0, gen)
            out.append(self._run(unet, key, x_t, t, paths)[1])
        return torch.cat(out).cpu()


@DIFFUSION_WATERMARKS.register("trigger-noise")
class TriggerNoise(DiffusionWatermark):
    """The input/output baseline: ``triggers`` secret initial noises from which DDIM (``steps`` steps) must
    generate one secret target image (random signs on a 4x4 grid, a 'logo'); each trigger is a trial, scored by
    the correlation of what it generates with the target. ``rows``: trigger rows per training batch."""

    weight = 3.0  # an MSE on noise predictions: with weight 1, or 16 triggers, the shared budget did not learn it
    material_keys = ("noise", "target")

    def __init__(self, triggers: int = 8, steps: int = 20, rows: int = 8):
        if triggers < 2 or steps < 1 or rows < 1:
            raise ConfigError(f"trigger-noise needs triggers >= 2, steps, rows >= 1; got {triggers}, {steps}, {rows}")
        self.triggers, self.steps, self.rows = triggers, steps, rows

    def material(self, unet, x, gen):
        c, size = x.shape[1], x.shape[-1]
        logo = (torch.randint(0, 2, (c, 4, 4), generator=gen) * 2 - 1).float()
        target = F.interpolate(logo[None], size=tuple(x.shape[2:]), mode="nearest")[0]
        return {"noise": torch.randn(self.triggers, c, size, size, generator=gen), "target": target}

    def step(self, unet, key, x_t, t, gen):
        from diffusers import DDPMScheduler

        k = min(self.rows, len(x_t))
        noise = key.tensors["noise"][torch.randint(self.triggers, (k,), generator=gen)].to(x_t)
        tk = torch.randint(0, diffusion.TIMESTEPS, (k,), generator=gen).to(t)
        target = key.tensors["target"].to(x_t).expand(k, *x_t.shape[1:])
        marked = DDPMScheduler(num_train_timesteps=diffusion.TIMESTEPS).add_noise(target, noise, tk)
        eps = unet(torch.cat([x_t, marked]), torch.cat([t, tk])).sample
        return eps[: len(x_t)], F.mse_loss(eps[len(x_t) :], noise)

    def scores(self, unet, key, trials, gen):
        device = str(next(unet.parameters()).device)
        images = diffusion.denoise(unet, key.tensors["noise"], steps=self.steps, device=device)
        target = key.tensors["target"]
        centred = images.flatten(1) - images.flatten(1).mean(1, keepdim=True)
        return _cosine(centred, target - target.mean())


def make_scheme(spec: str | DiffusionWatermark) -> DiffusionWatermark:
    """A diffusion watermark by spec: ``"aiao"``, ``"aiao(blocks=...)"``, ``"trigger-noise(triggers=32)"``."""
    if isinstance(spec, DiffusionWatermark):
        return spec
    return DIFFUSION_WATERMARKS.from_spec(spec)


FORMAT, VERSION = "modelprint-diffusion-watermark-key", 1
_FIELDS = {
    "format": str,
    "format_version": int,
    "scheme": str,
    "key_seed": int,
    "owner_sha256": (str, type(None)),
    "threshold": (float, type(None)),
    "trials": int,
    **container.CALIBRATION_FIELDS,
}


@dataclass(frozen=True, eq=False)
class DiffusionKey(container.Calibrated):
    """The owner's secret for a diffusion watermark: the scheme, its key material and, once calibrated, the
    per-trial threshold and the clean models' success rates at it (the calibration's null scores)."""

    scheme: DiffusionWatermark
    key_seed: int
    tensors: dict[str, torch.Tensor]
    owner_sha256: str | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    threshold: float | None = None
    null_scores: np.ndarray | None = None
    trials: int = 64
    null_models: tuple[str, ...] = ()
    target_fpr: float = 0.01
    null_strata: tuple[str, ...] = ()

    def __repr__(self) -> str:  # not the tensors: a key prints as what it is
        return f"DiffusionKey({self.scheme.spec()}, {describe_null(self.null_scores, self.target_fpr)})"

    def scores(self, unet, trials: int | None = None, seed: int = 0) -> torch.Tensor:
        """Each Monte Carlo trial's score on ``unet`` (trials and inputs drawn from ``seed``)."""
        trials = self.trials if trials is None else trials
        if trials < 1:
            raise ConfigError(f"trials must be positive, got {trials}")
        return self.scheme.scores(unet.eval(), self, trials, torch.Generator().manual_seed(seed))

    def save(self, path: str | Path) -> Path:
        header = {
            "format": FORMAT,
            "format_version": VERSION,
            "scheme": self.scheme.spec(),
            "key_seed": self.key_seed,
            "owner_sha256": self.owner_sha256,
            "threshold": self.threshold,
            "trials": self.trials,
            **self.calibration_header(),
        }
        tensors = {f"material.{k}": v for k, v in self.tensors.items()}
        return container.write(path, header, {**tensors, **self.calibration_tensors()})

    @classmethod
    def load(cls, path: str | Path) -> DiffusionKey:
        header, tensors = container.peek(path, "diffusion watermark key")
        header = container.check(
            path, header, tensors, FORMAT, VERSION, _FIELDS, "diffusion watermark key", container.CALIBRATION_OPTIONAL
        )
        try:
            scheme = make_scheme(header["scheme"])
        except ConfigError as e:
            raise FileFormatError(f"{path}: unknown diffusion watermark in header ({e})") from None
        material = {k.removeprefix("material."): v for k, v in tensors.items() if k.startswith("material.")}
        if missing := set(scheme.material_keys) - set(material):
            raise FileFormatError(f"{path}: diffusion watermark key lacks {sorted(missing)}")
        if "null_rates" in tensors:  # keys written before this release named them so
            tensors = {**tensors, "null_scores": tensors["null_rates"]}
        return cls(
            scheme, header["key_seed"], material, header["owner_sha256"], threshold=header["threshold"],
            trials=header["trials"], **cls.calibration_fields(header, tensors),
        )  # fmt: skip


def embed(
    unet,
    scheme: str | DiffusionWatermark,
    x: torch.Tensor,
    key_seed: int = 0,
    *,
    steps: int = 300,
    lr: float = 1e-3,
    batch_size: int = 32,
    weight: float | None = None,
    fidelity: float = 30.0,
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
):
    """A watermarked copy of ``unet`` and its key. Each of ``steps`` AdamW steps minimises denoising on a batch
    of ``x`` + ``weight`` (default: the scheme's) x the watermark loss + ``fidelity`` x the mean squared distance
    to the original model's noise predictions (which keeps normal sampling where it was)."""
    if steps < 1:
        raise ConfigError(f"steps must be positive, got {steps}")
    scheme = make_scheme(scheme).for_unet(unet)
    weight = scheme.weight if weight is None else weight
    gen = torch.Generator().manual_seed(key_seed)
    unet = unet.to(device).eval()
    key = DiffusionKey(scheme, key_seed, scheme.material(unet, x, gen))
    original, marked = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(unet).train()
    opt = torch.optim.AdamW(scheme.trainable(marked), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for i in range(steps):
        batch = x[torch.randint(len(x), (min(batch_size, len(x)),), generator=gen)]
        x_t, noise, t = diffusion.noisy(batch.to(device), gen)
        eps, mark = scheme.step(marked, key, x_t, t, gen)
        with torch.no_grad():
            reference = original(x_t, t).sample
        loss = F.mse_loss(eps, noise) + weight * mark + fidelity * F.mse_loss(eps, reference)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(i + 1, mark.item())
    marked.eval()
    return marked, replace(key, owner_sha256=module_digest(marked))


def calibrate(key: DiffusionKey, clean: Sequence, *, trials: int = 64, seed: int = 1, target_fpr: float = 0.01,
              device: str = "cpu") -> DiffusionKey:  # fmt: skip
    """``key`` with a per-trial threshold (the clean models' mean score + ``SIGMAS`` standard deviations) and the
    clean models' success rates at it; ``clean``: UNets or diffusers folders known not to carry the mark."""
    check_alpha(target_fpr)
    if len(clean) < 2:
        raise ConfigError("calibrating a diffusion watermark needs at least 2 clean models")
    scores = [key.scores(_unet(m, device), trials, seed + i).numpy() for i, m in enumerate(clean)]
    pooled = np.concatenate(scores)
    threshold = float(pooled.mean() + SIGMAS * pooled.std(ddof=1))
    rates = [(s > threshold).mean() for s in scores]
    names = [str(m) if isinstance(m, str | Path) else type(m).__name__ for m in clean]
    return replace(key, threshold=threshold, trials=trials).calibrated(rates, names, target_fpr)


def _unet(suspect, device: str):
    if isinstance(suspect, str | Path):
        return diffusion.load(suspect, device)
    if not isinstance(suspect, nn.Module):
        raise AccessError(f"diffusion watermarks are read from the UNet's weights, not a {type(suspect).__name__}")
    return suspect.to(device).eval()


def verify(key: DiffusionKey, suspect, *, trials: int | None = None, seed: int = 0, alpha: float | None = None,
           device: str = "cpu") -> Verdict:  # fmt: skip
    """Does the UNet ``suspect`` (module or diffusers folder) carry the watermark? The score is the fraction of
    ``trials`` Monte Carlo trials above the calibrated threshold (the verification rate)."""
    if key.threshold is None or key.null_scores is None:
        raise ConfigError("the diffusion watermark key is not calibrated: run calibrate(key, [clean UNets])")
    alpha = key.target_fpr if alpha is None else alpha
    check_alpha(alpha)
    trials = key.trials if trials is None else trials
    scores = key.scores(_unet(suspect, device), trials, seed)
    rate = float((scores > key.threshold).float().mean())
    return decide(
        rate, rate_null(key.null_scores, trials, key.null_strata), alpha, queries=0,
        scheme=f"diffusion-watermark:{key.scheme.spec()}",
        trials=trials, trial_threshold=key.threshold, mean_score=float(scores.mean()),
        clean_rates=[float(r) for r in key.null_scores],
    )  # fmt: skip
