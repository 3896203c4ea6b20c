"""Representations: what a fingerprint keeps of a model's answers to its queries, as a tensor a distance can
compare. ``needs`` is the access they take at verification: hard labels, probabilities or logits."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from ..access import Output
from ..base import Params, Registry
from ..errors import ConfigError

Kind = Literal["categorical", "real"]
REPRESENTATIONS: Registry[Representation] = Registry("representation")


class Representation(Params):
    """Turns a model's outputs on the queries into the tensor distances compare."""

    kind: ClassVar[Kind] = "real"
    layouts: ClassVar[tuple[str, ...]] = ("flat", "pairs", "groups")  # query layouts it can read
    per_unit: ClassVar[bool] = False  # one entry per query unit (what sequential verification needs)

    @property
    def needs(self) -> Output:
        return "probs"

    def __call__(self, out: torch.Tensor, aux: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
        raise NotImplementedError


@REPRESENTATIONS.register("labels")
class Labels(Representation):
    """The predicted class of each query (hard-label black-box)."""

    kind, per_unit = "categorical", True

    @property
    def needs(self) -> Output:
        return "labels"

    def __call__(self, out, aux, num_classes):
        return out


@REPRESENTATIONS.register("probs")
class Probs(Representation):
    """The probability vector of each query."""

    def __call__(self, out, aux, num_classes):
        return out


@REPRESENTATIONS.register("concat")
class Concat(Representation):
    """Every query's probability vector, concatenated into one vector compared as a whole (the UAP fingerprint
    of Peng et al. 2022: the outputs on x and on x + v)."""

    def __call__(self, out, aux, num_classes):
        return out.reshape(1, -1)


@REPRESENTATIONS.register("encoded")
class Encoded(Representation):
    """The concatenated probabilities mapped by the encoder the sampler trained and stored in the fingerprint
    (the UAP fingerprint's contrastive encoder, Peng et al. 2022): one unit vector."""

    def __call__(self, out, aux, num_classes):
        from .learned import stored_mlp

        net = stored_mlp(aux, "encoder.", "encoder", "uap(surrogates=4,references=4)").double()
        v = out.double().reshape(1, -1)
        if v.shape[1] != net[0].in_features:
            raise ConfigError(f"the encoder reads {net[0].in_features} outputs, the answers give {v.shape[1]}")
        with torch.no_grad():
            return F.normalize(net(v), dim=1)


@REPRESENTATIONS.register("verifier")
class VerifierOutput(Representation):
    """The probability, by the meta-verifier the sampler learned and stored in the fingerprint (MetaV), that the
    model answering is the owner's or derived from it."""

    def __call__(self, out, aux, num_classes):
        from .learned import stored_mlp

        net = stored_mlp(aux, "verifier.net.", "verifier", "use the metav sampler")
        if out.numel() != net[0].in_features:
            raise ConfigError(f"the verifier reads {net[0].in_features} outputs, got {out.numel()}")
        with torch.no_grad():
            return torch.sigmoid(net(out.float().reshape(1, -1)).squeeze(1)).double()


@REPRESENTATIONS.register("shift")
class Shift(Representation):
    """How the probabilities move from each seed to its variant, f(x') - f(x) over every (x, x') pair,
    concatenated into one vector: what the owner's own perturbation does to it, without the answers on the
    seeds that independent models share (modelprint's variant of the UAP fingerprint)."""

    layouts = ("pairs",)

    def __call__(self, out, aux, num_classes):
        return (out[1::2] - out[0::2]).reshape(1, -1)


@REPRESENTATIONS.register("logits")
class Logits(Representation):
    """The raw scores of each query (white-box suspects and logit APIs only)."""

    @property
    def needs(self) -> Output:
        return "logits"

    def __call__(self, out, aux, num_classes):
        return out


class _RawOutputs(Representation):
    """Read the raw outputs (logits), as the papers and QuRD do; ``probs=true`` reads probabilities instead
    (modelprint's variant for APIs that answer probabilities only); ``hard=true`` reads labels."""

    def __init__(self, hard: bool = False, probs: bool = False):
        self.hard, self.probs = hard, probs

    @property
    def needs(self) -> Output:
        return "labels" if self.hard else "probs" if self.probs else "logits"


@REPRESENTATIONS.register("ddv")
class DDV(_RawOutputs):
    """ModelDiff's decision distance vector over (seed, variant) pairs (Li et al. ISSTA 2021): the cosine distance
    1 - cos(f(x), f(x')) of the logits per pair; the hard variant is the label shift (label(x') - label(x)) mod C."""

    layouts = ("pairs",)

    @property
    def kind(self) -> Kind:  # type: ignore[override]
        return "categorical" if self.hard else "real"

    @property
    def per_unit(self) -> bool:  # type: ignore[override]
        return self.hard

    def __call__(self, out, aux, num_classes):
        a, b = out[0::2], out[1::2]
        if self.hard:
            return (b - a) % num_classes
        return (1 - F.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12))[None]  # compared as a whole


@REPRESENTATIONS.register("sac")
class SAC(_RawOutputs):
    """SAC's sample correlation (Guan et al. NeurIPS 2022): the n x n matrix (1 - cos(o_i, o_j)) / 2 of the
    logits on the queries, in [0, 1] and invariant to what the output values mean; the hard variant is label
    inequality between queries (QuRD's HardSAC)."""

    def __call__(self, out, aux, num_classes):
        if self.hard:
            return (out[:, None] != out[None, :]).float()
        unit = F.normalize(out.double(), dim=1, eps=1e-12)
        return (1 - unit @ unit.T) / 2


@REPRESENTATIONS.register("lime")
class Lime(Representation):
    """Zest (Jia et al. 2022): per reference input, the least-squares linear model W = pinv(M) Y (no intercept, no
    kernel weights, as in the paper's code) mapping its masks M to the logits Y of its masked variants; the rows
    of every reference's segments x classes weights, stacked (classes are columns, for class alignment)."""

    layouts = ("groups",)

    @property
    def needs(self) -> Output:
        return "logits"

    def __call__(self, out, aux, num_classes):
        masks = aux["masks"]  # (n, m, segments)
        y = out.reshape(masks.shape[0], masks.shape[1], -1).double()
        return (torch.linalg.pinv(masks.double()) @ y).flatten(0, 1)  # (n * segments, classes)


@REPRESENTATIONS.register("robust")
class Robust(Representation):
    """Whether each adversarial test case is still answered with its seed's true label (DeepJudge's robustness:
    its mean is the robust accuracy)."""

    kind, per_unit = "real", True

    @property
    def needs(self) -> Output:
        return "labels"

    def __call__(self, out, aux, num_classes):
        if "labels" not in aux:
            raise ConfigError("the robust representation needs the seeds' labels: use the deepjudge sampler")
        return (out == aux["labels"]).double()


@REPRESENTATIONS.register("label-rank")
class LabelRank(Representation):
    """FBI (Maho et al. 2023): per query, the position of its true label among the model's top ``k`` classes
    (``k`` when absent). With ``k=1`` it is whether the model is right, from hard labels alone."""

    kind = "categorical"

    def __init__(self, k: int = 3):
        self.k = k

    @property
    def needs(self) -> Output:
        return "labels" if self.k == 1 else "probs"

    def __call__(self, out, aux, num_classes):
        y = aux["labels"].to(out.device)
        if out.ndim == 1:  # hard labels
            return (out != y).long()
        top = out.topk(min(self.k, out.shape[1]), dim=1).indices
        hit = top == y[:, None]
        return torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(y, self.k))


@REPRESENTATIONS.register("preference")
class Preference(Representation):
    """modelprint: per query, +1 when the model gives the owner's label, -1 when it gives the population's label
    instead (0 for anything else, and 0 where the two agree). A derived model, even a poor one, prefers the
    owner's idiosyncratic answers; an independent one, even a strong one, prefers the population's.

    ``against`` names the population's label: ``consensus``, the reference models' majority on each query, or
    ``nearest``, the labels of the one reference that agrees most with this model over all the queries. A weak
    independent model seldom follows the consensus, which lets it score near a weak thief; against its nearest
    reference (one of its own kind) it prefers the population again. Needs the owner's and the references'
    labels kept by the sampler (``divergent``)."""

    kind = "real"

    def __init__(self, against: str = "consensus"):
        if against not in ("consensus", "nearest"):
            raise ConfigError(f"preference is against 'consensus' or 'nearest', not {against!r}")
        self.against = against

    @property
    def needs(self) -> Output:
        return "labels"

    def __call__(self, out, aux, num_classes):
        if "owner" not in aux or not ("references" in aux or self.against == "consensus" and "consensus" in aux):
            raise ConfigError(
                "the preference representation needs the references' labels that the divergent sampler keeps "
                "(a fingerprint extracted before they were kept: extract it again)"
            )
        # on the CPU, where the fingerprint's labels are: the mode's choice among ties must not depend on the device
        answers, o = out.cpu(), aux["owner"].cpu()
        if "references" not in aux:  # a fingerprint from before the references' labels were kept
            other = aux["consensus"].cpu()
        else:
            refs = aux["references"].cpu()
            if refs.ndim != 2 or refs.shape[0] != len(out) or refs.shape[1] < 1:
                raise ConfigError(
                    f"the references' labels have shape {tuple(refs.shape)}, not ({len(out)} queries, references)"
                )
            if self.against == "consensus":
                other = refs.mode(1).values
            else:  # the labels of the reference that agrees most with these answers
                other = refs[:, (refs == answers[:, None]).double().mean(0).argmax()]
        return ((answers == o).double() - (answers == other).double()).to(out.device)
