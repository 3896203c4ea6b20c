"""The white-box comparisons by name (``modelprint compare --method``): each needs both checkpoints and returns a
calibrated verdict. name -> (function, what it reproduces, how it departs from its paper); every function is called
the same way, ``f(model_a, model_b, data, input_shape, null_models=, alpha=, cache_dir=, device=)``."""

from __future__ import annotations

from .connectivity import compare_barrier
from .deepjudge import compare_layers
from .gradfield import compare_gradients
from .helpers import held_out
from .weights import compare_activations, compare_weights


def _transformer(method: str, a, b, data, **options):
    from ..transformer import compare

    return compare(method, a, b, "text" if data in (None, "digits") and _is_text(a) else data, **options)


def _is_text(model) -> bool:
    from ..transformer.text import SentenceEncoder

    return isinstance(model, SentenceEncoder)


COMPARISONS = {
    "matching": (
        lambda a, b, data, input_shape, **options: compare_weights(a, b, input_shape=input_shape, **options),
        "Do the hidden units' incoming and outgoing weights agree on one correspondence (Zhu et al., ICML 2025)",
        "equi-normalisation first, so positive rescalings are undone too",
    ),
    "barrier": (
        lambda a, b, data, input_shape, **options: compare_barrier(a, b, data, input_shape=input_shape, **options),
        "Loss barrier on the linear path after weight matching (Frankle et al. 2020; Ainsworth et al. 2023)",
        "batch-norm statistics re-estimated on the path (REPAIR's reset); weak where alignment connects "
        "independent models",
    ),
    "deepjudge": (
        lambda a, b, data, input_shape, **options: compare_layers(a, b, data, input_shape=input_shape, **options),
        "DeepJudge's layer metrics LOD, LAD, NOD, NAD, majority vote (Chen et al., S&P 2022)",
        "the suspect's units are aligned to the owner's first; each metric calibrated, Rüger's vote",
    ),
    "gradients": (
        lambda a, b, data, input_shape, **options: compare_gradients(a, b, data, **options),
        "ModelGiF's gradient fields on the path from the data's mean to each input (Song et al., ICCV 2023)",
        "the reference is the data's mean input; log-probability of the owner's answer",
    ),
    **{
        name: (
            lambda a, b, data, input_shape, _name=name, **options: _transformer(_name, a, b, data, **options),
            paper,
            deviation,
        )
        for name, paper, deviation in (
            (
                "units",
                "Transformers: do the MLP units' input and output sides match one correspondence (Zhu et al., "
                "ICML 2025)",
                "the second view is the unit's output side (no GLU gate); through rotations",
            ),
            (
                "invariants",
                "Transformers: HuRef's invariant weight products (Zeng et al., NeurIPS 2024)",
                "norm gains folded first, so a rotated stream keeps them; X is the embedding layer's output",
            ),
            (
                "hidden-cka",
                "Transformers: CKA of the blocks' hidden states (REEF, Zhang et al., ICLR 2025)",
                "centred, not z-scored, features (rotation-invariant); best block; across depths",
            ),
        )  # fmt: skip
    },
    "cka": (
        lambda a, b, data, input_shape, **options: compare_activations(a, b, held_out(data)[0][:200], **options),
        "Linear CKA between the layers' representations, best layer pair (Kornblith et al. 2019; REEF)",
        "",
    ),
}
