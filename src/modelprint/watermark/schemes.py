"""Classifier watermarks planted by the owner before release. A scheme makes a secret key (inputs and the labels
the marked model must give them, or for Uchida's white-box scheme a projection and a bit string), says how the
key is trained in, and how a suspect's answer to the key is read. Each is a small class in ``WATERMARKS``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..access import Model, View, WhiteBox
from ..base import Params, Registry
from ..errors import AccessError, ConfigError
from ..nets import weight_layers

WATERMARKS: Registry[Watermark] = Registry("watermark")


class Watermark(Params):
    """A watermark scheme. ``make_key`` returns the key inputs and their target labels; ``read`` what a suspect
    answers to them (hard labels for black-box schemes). ``chance`` is the probability that an unrelated model
    matches one target, where that is known exactly; otherwise the null comes from clean models."""

    white_box: ClassVar[bool] = False

    def for_model(self, model: nn.Module) -> Watermark:
        """This scheme with any parameter that depends on the model (e.g. a layer) resolved."""
        return self

    def make_key(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator):
        raise NotImplementedError

    def chance(self, num_classes: int) -> float | None:
        return None

    def penalty(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """A loss added to training (white-box schemes); black-box keys are mixed into the data instead."""
        return None

    def read(self, suspect: Model, inputs: torch.Tensor) -> torch.Tensor:
        return View(suspect, "labels", budget=len(inputs)).labels(inputs)


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 10:
        raise ConfigError(f"a watermark key needs at least 10 inputs, got size={size!r}")


@WATERMARKS.register("trigger-set")
class TriggerSet(Watermark):
    """Adi et al. 2018: out-of-distribution inputs (uniform noise over the data's range) with labels drawn
    uniformly at random, so an unrelated model agrees with each label with probability exactly 1/C."""

    def __init__(self, size: int = 100):
        _check_size(size)
        self.size = size

    def chance(self, num_classes):
        return 1.0 / num_classes

    def make_key(self, model, x, y, num_classes, gen):
        low, high = float(x.min()), float(x.max())
        inputs = low + (high - low) * torch.rand(self.size, *x.shape[1:], generator=gen)
        return inputs, torch.randint(0, num_classes, (self.size,), generator=gen)


class _OneTarget(Watermark):
    """Zhang et al. 2018: key inputs relabelled to one secret target class. Their content carries evidence for
    some class, so the null rate is not 1/C: calibrate on clean models.

    The paper draws the target class and the inputs at random. modelprint's deviation: both are chosen so that
    clean models do not give the target on the key. A random choice can land on a class that clean models
    predict on most of the inputs anyway (an independent MLP gave an ``unrelated`` key's target on 68% of its
    inputs): an innocent model then reads as marked, and a clean null near the marked rate leaves the key
    unverifiable. The clean references are the owner's unmarked model, any ``references`` given, and
    ``SURROGATES``, small nets of several architectures fitted here to the training data (the owner's model
    alone does not suffice: on inputs unlike the task, MLPs and convolutional nets favour different classes).
    Of ``CANDIDATES`` x ``size`` random candidates, the target is the class whose largest mean probability
    over the references is smallest (ties in a seeded order; the next class if fewer than ``size`` candidates
    qualify), and the key keeps the ``size`` candidates on which the references' largest probability of the
    target is smallest, never one that a reference labels as the target (nor, for stamped inputs, one of the
    target class). Everything is deterministic given the generator (and the owner's model)."""

    size: int
    CANDIDATES: ClassVar[int] = 4  # candidates drawn per key input
    SURROGATES: ClassVar[tuple[tuple[str, dict], ...]] = (
        ("mlp", {}),
        ("mlp", {"width": 64, "depth": 1}),
        ("mlp", {"depth": 0}),  # a linear model
        ("resnet-tiny", {}),  # convolutional, residual, batch-normalised
    )
    SURROGATE_DATA: ClassVar[int] = 2048  # training inputs (at most) each surrogate is fitted to

    def candidates(
        self, x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Up to ``n`` candidate key inputs, and the true class of each where it has one (a stamped training
        input may not take its own class as target)."""
        raise NotImplementedError

    def surrogates(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator) -> list[nn.Module]:
        """The ``SURROGATES`` (architecture, options), each seeded from ``gen`` and fitted (~400 Adam steps) to a
        seeded sample of at most ``SURROGATE_DATA`` training inputs."""
        from ..lineage.train import fit
        from ..nets import make_net

        out = []
        for arch, options in self.SURROGATES:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
            idx = torch.randperm(len(x), generator=gen)[: self.SURROGATE_DATA]
            with torch.random.fork_rng(devices=[]):  # seeded initialisation, the global generator untouched
                torch.manual_seed(seed)
                net = make_net(arch, tuple(x.shape[1:]), num_classes, **options)
            epochs = max(5, min(40, round(400 * 32 / len(idx))))  # batches of 32
            fit(net, x[idx].float(), y[idx].long(), epochs=epochs, lr=0.01, seed=seed)
            out.append(net.eval())
        return out

    def make_key(self, model, x, y, num_classes, gen, references: Sequence[nn.Module] = ()):
        cand, own = self.candidates(x, y, self.CANDIDATES * self.size, gen)
        cand = cand.clamp(x.min(), x.max())
        refs = [model, *references, *self.surrogates(x, y, num_classes, gen)]
        probs = torch.stack([_probabilities(m, cand) for m in refs])  # (references, candidates, classes)
        if probs.shape[2] != num_classes:
            raise ConfigError(f"a reference model gives {probs.shape[2]} classes, the key expects {num_classes}")
        classes = torch.arange(num_classes)
        allowed = torch.ones(len(cand), num_classes, dtype=torch.bool) if own is None else own[:, None] != classes
        mean = (probs * allowed).sum(1) / allowed.sum(0).clamp_min(1)  # (references, classes)
        order = torch.randperm(num_classes, generator=gen)  # seeded tie-break among equally unlikely classes
        order = order[torch.sort(mean.max(0).values[order], stable=True).indices]
        avoided = allowed & (probs.argmax(2) != classes[:, None, None]).all(1).T  # (candidates, classes)
        # the least likely class, or the next when fewer than ``size`` candidates avoid it
        target = next((int(c) for c in order if int(avoided[:, c].sum()) >= self.size), None)
        if target is None:
            raise ConfigError(
                f"{self.spec()}: no class is avoided by the clean reference models on {self.size} of "
                f"{len(cand)} candidates (at most {int(avoided.sum(0).max())})"
            )
        eligible = avoided[:, target]
        rank = torch.where(eligible, probs[:, :, target].max(0).values, torch.inf)
        keep = torch.sort(rank, stable=True).indices[: self.size]  # stable: ties in the drawn order
        keep = keep.sort().values  # the kept inputs in the order they were drawn
        return cand[keep], torch.full((self.size,), target)


def _probabilities(model: nn.Module, inputs: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The class probabilities ``model`` (put in eval mode for the call) gives ``inputs``, on the CPU."""
    param = next(iter(model.parameters()), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [
                model(inputs[i : i + batch].to(device, dtype)).float().softmax(1).cpu()
                for i in range(0, len(inputs), batch)
            ]
    finally:
        model.train(was_training)
    return torch.cat(out)


class _Stamped(_OneTarget):
    """Training inputs with a secret pattern added; the target is never an input's own class."""

    def __init__(self, size: int = 100, strength: float = 0.5):
        _check_size(size)
        self.size, self.strength = size, strength

    def pattern(self, shape: tuple[int, ...], span: float, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def candidates(self, x, y, n, gen):
        idx = torch.randperm(len(x), generator=gen)[:n]
        span = float(x.max() - x.min()) or 1.0
        return x[idx] + self.strength * self.pattern(tuple(x.shape[1:]), span, gen), y[idx].long()


@WATERMARKS.register("noise")
class NoiseStamp(_Stamped):
    """A fixed secret Gaussian noise pattern over the whole input."""

    def pattern(self, shape, span, gen):
        return torch.randn(shape, generator=gen) * span * 0.5


@WATERMARKS.register("content")
class ContentStamp(_Stamped):
    """A saturated block at a secret position (a logo, in the paper), ``side`` of each spatial side."""

    def __init__(self, size: int = 100, strength: float = 0.5, side: float = 0.4):
        super().__init__(size, strength)
        if not 0 < side <= 1:
            raise ConfigError(f"content side is a fraction of each spatial side, got {side}")
        self.side = side

    def pattern(self, shape, span, gen):
        mark = torch.zeros(shape)
        box: list = [slice(None)] if len(shape) > 1 else []
        for n in shape[1:] if len(shape) > 1 else shape:
            w = max(1, round(n * self.side))
            start = int(torch.randint(0, n - w + 1, (1,), generator=gen))
            box.append(slice(start, start + w))
        mark[tuple(box)] = span * 2
        return mark


@WATERMARKS.register("unrelated")
class Unrelated(_OneTarget):
    """Inputs from outside the task. With ``dataset`` (a registered dataset of the same input shape, e.g. a
    local ``npz:`` file) they are its training inputs; otherwise smooth random images (Gaussian noise drawn at a
    quarter of the resolution and interpolated), structured content no class of the task resembles."""

    def __init__(self, size: int = 100, dataset: str = ""):
        _check_size(size)
        self.size, self.dataset = size, dataset

    def candidates(self, x, y, n, gen):
        shape = tuple(x.shape[1:])
        if self.dataset:
            from .. import data

            other = data.load(self.dataset, "train").x
            if tuple(other.shape[1:]) != shape:
                raise ConfigError(f"unrelated({self.dataset}): input shape {tuple(other.shape[1:])} is not {shape}")
            return other[torch.randperm(len(other), generator=gen)[:n]].to(x.dtype), None
        grid = shape if len(shape) > 1 else (1, *shape)  # channels first, then spatial sides
        coarse = torch.randn(n, grid[0], *[max(2, side // 4) for side in grid[1:]], generator=gen)
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(len(grid) - 1)
        smooth = F.interpolate(coarse, size=grid[1:], mode=mode, align_corners=False) if mode else coarse
        flat = smooth.flatten(1)
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        unit = (flat - lo) / (hi - lo).clamp_min(1e-8)
        return (x.min() + unit * (x.max() - x.min())).reshape(n, *shape), None


@WATERMARKS.register("frontier-stitching")
class FrontierStitching(Watermark):
    """Le Merrer et al. 2019: training inputs pushed towards the decision frontier by FGSM (radius ``eps`` of the
    data's range); half are true adversaries (the model's label flipped), half false adversaries (it did not),
    all keyed with their true label, and the model is fine-tuned until it gets them all right. When too few
    inputs flip at ``eps`` the radius grows by half, when too few resist it shrinks, keeping what each radius
    found. The paper's
    binomial(1/2) null assumes an unrelated model gets half of them right, which depends on how far the
    adversaries transfer, so the null comes from clean models."""

    def __init__(self, size: int = 100, eps: float = 0.25):
        _check_size(size)
        if not 0 < eps < 1:
            raise ConfigError(f"frontier-stitching eps is a fraction of the input range, got {eps}")
        self.size, self.eps = size, eps

    def make_key(self, model, x, y, num_classes, gen):
        model.eval()
        order = torch.randperm(len(x), generator=gen)
        device = next(model.parameters()).device
        span, low, high = float(x.max() - x.min()) or 1.0, float(x.min()), float(x.max())
        need_true = self.size // 2
        eps, true, false = self.eps, [], []

        def enough() -> bool:
            return len(true) >= need_true and len(false) >= self.size - need_true

        for _ in range(8):  # a robust model needs a larger step to flip some inputs, a fragile one a smaller
            for i in range(0, len(x), 256):
                idx = order[i : i + 256]
                xb, yb = x[idx].to(device).float().requires_grad_(True), y[idx].to(device)
                logits = model(xb)
                (grad,) = torch.autograd.grad(F.cross_entropy(logits, yb), xb)
                adv = (xb + eps * span * grad.sign()).clamp(low, high).detach()
                with torch.no_grad():
                    right, flipped = logits.argmax(1) == yb, model(adv).argmax(1) != yb
                true += list(zip(adv[right & flipped].cpu(), yb[right & flipped].cpu(), strict=True))
                false += list(zip(adv[right & ~flipped].cpu(), yb[right & ~flipped].cpu(), strict=True))
                if enough():
                    break
            if enough():
                break
            eps = min(eps * 1.5, 1.0) if len(true) < need_true else eps / 1.5
        chosen = true[:need_true] + false[: self.size - min(len(true), need_true)]
        if len(chosen) < self.size:
            raise ConfigError(f"frontier-stitching found {len(true)} true and {len(false)} false adversaries")
        return torch.stack([a for a, _ in chosen]), torch.stack([t for _, t in chosen]).long()


def _marked_weight(module: nn.Module, layer: str) -> torch.Tensor:
    try:  # attribute by attribute: TorchScript modules have no get_submodule
        sub = functools.reduce(getattr, layer.split("."), module)
    except AttributeError:
        raise AccessError(f"the suspect has no layer {layer!r} to read the watermark from") from None
    w = getattr(sub, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim < 2:
        raise AccessError(f"layer {layer!r} of the suspect has no weight matrix or kernel")
    return w.float().mean(0).flatten()  # the mean over output filters: invariant to permuting them


@WATERMARKS.register("uchida")
class Uchida(Watermark):
    """Uchida et al. 2017 (white-box): a secret projection X (``bits`` x M) and bit string b; training adds
    ``strength * BCE(sigmoid(X w), b)`` where w is the mean over output filters of ``layer``'s kernel (M values).
    The suspect's bits are [X w >= 0]; b is uniformly random, so an unrelated model matches each bit with
    probability exactly 1/2. The default layer is the first Linear/Conv layer with at least 2 x bits inputs."""

    white_box = True

    def __init__(self, bits: int = 64, layer: str = "", strength: float = 0.1):
        if not isinstance(bits, int) or bits < 16:
            raise ConfigError(f"uchida needs at least 16 bits, got bits={bits!r}")
        self.bits, self.layer, self.strength = bits, str(layer), strength  # str: a Sequential index parses as int

    def for_model(self, model):
        if self.layer:
            _marked_weight(model, self.layer)
            return self
        layers = weight_layers(model)  # of a TorchScript module too
        names = {id(m): n for n, m in model.named_modules()}
        for m in layers[:-1]:  # never the classifier head
            if m.weight[0].numel() >= 2 * self.bits:
                return Uchida(self.bits, names[id(m)], self.strength)
        raise ConfigError(f"no hidden Linear/Conv layer of {type(model).__name__} has {2 * self.bits} inputs")

    def chance(self, num_classes):
        return 0.5

    def make_key(self, model, x, y, num_classes, gen):
        m = _marked_weight(model, self.layer).numel()
        return torch.randn(self.bits, m, generator=gen), torch.randint(0, 2, (self.bits,), generator=gen)

    def penalty(self, model, inputs, labels):
        w = _marked_weight(model, self.layer)
        return self.strength * F.binary_cross_entropy_with_logits(inputs.to(w.device) @ w, labels.float().to(w.device))

    def read(self, suspect, inputs):
        if not isinstance(suspect, WhiteBox):
            raise AccessError("uchida is a white-box watermark: verifying it needs the suspect's weights")
        with torch.no_grad():
            w = _marked_weight(suspect.module, self.layer).cpu()
            if w.numel() != inputs.shape[1]:
                raise AccessError(
                    f"layer {self.layer!r} of the suspect has {w.numel()} inputs, the key {inputs.shape[1]}"
                )
            return (inputs @ w >= 0).long()


def _activations(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of ``model``'s last weight layer (its classifier head) on ``x``, one row per input."""
    if isinstance(model, torch.jit.ScriptModule):
        raise AccessError("deepsigns reads activations through a hook, which a TorchScript module does not allow")
    captured: list[torch.Tensor] = []
    hook = weight_layers(model)[-1].register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return captured[0].flatten(1)


@WATERMARKS.register("deepsigns")
class DeepSigns(Watermark):
    """Rouhani et al., "DeepSigns" (ASPLOS 2019), white-box: the mark is in the distribution of hidden activations.
    On the key's inputs (``size`` training inputs of one secret class), the mean activation feeding the classifier
    head, projected by a secret matrix A (``size`` x features, from ``seed``), must give the key's random bits:
    training adds ``strength * BCE(sigmoid(A mu), b)``; the suspect's bits are [A mu >= 0], so an unrelated model
    matches each with probability exactly 1/2. Deviations: the class mean stands for the paper's Gaussian-mixture
    centre of that class; one bit per key input (the key file stores one label per input), so ``size`` is also
    the code's length."""

    white_box = True

    def __init__(self, size: int = 32, strength: float = 0.1, seed: int = 0):
        _check_size(size)
        self.size, self.strength, self.seed = size, strength, seed

    def chance(self, num_classes):
        return 0.5

    def make_key(self, model, x, y, num_classes, gen):
        target = int(torch.randint(num_classes, (1,), generator=gen))
        rows = torch.nonzero(y == target).flatten()
        if len(rows) < self.size:
            raise ConfigError(f"class {target} has {len(rows)} training inputs; deepsigns needs size={self.size}")
        rows = rows[torch.randperm(len(rows), generator=gen)[: self.size]]
        return x[rows], torch.randint(0, 2, (self.size,), generator=gen)

    def _projected(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        mean = _activations(model, inputs.to(next(model.parameters()).device)).mean(0)
        a = torch.randn(len(inputs), mean.numel(), generator=torch.Generator().manual_seed(self.seed))
        return a.to(mean.device) @ mean

    def penalty(self, model, inputs, labels):
        training = model.training
        model.eval()  # the activations as they will be read: no dropout, batch norm's running statistics
        try:
            z = self._projected(model, inputs)
        finally:
            model.train(training)
        return self.strength * F.binary_cross_entropy_with_logits(z, labels.float().to(z.device))

    def read(self, suspect, inputs):
        if not isinstance(suspect, WhiteBox):
            raise AccessError("deepsigns is a white-box watermark: verifying it needs the suspect's activations")
        with torch.no_grad():
            return (self._projected(suspect.module.eval(), inputs) >= 0).long().cpu()
