"""The white-box comparisons by name (``modelprint compare --method``): each needs both checkpoints and returns a
calibrated verdict. name -> (function, what it reproduces, how it departs from its paper)."""

from __future__ import annotations

from .connectivity import compare_barrier
from .deepjudge import compare_layers
from .gradfield import compare_gradients
from .weights import compare_activations, compare_weights

COMPARISONS = {
    "matching": (
        compare_weights,
        "Do the hidden units' incoming and outgoing weights agree on one correspondence (Zhu et al., ICML 2025)",
        "equi-normalisation first, so positive rescalings are undone too",
    ),
    "barrier": (
        compare_barrier,
        "Loss barrier on the linear path after weight matching (Frankle et al. 2020; Ainsworth et al. 2023)",
        "batch-norm statistics re-estimated on the path (REPAIR's reset); weak where alignment connects "
        "independent models",
    ),
    "deepjudge": (
        compare_layers,
        "DeepJudge's layer metrics LOD, LAD, NOD, NAD, majority vote (Chen et al., S&P 2022)",
        "the suspect's units are aligned to the owner's first; each metric calibrated, Rüger's vote",
    ),
    "gradients": (
        compare_gradients,
        "ModelGiF's gradient fields on the path from the data's mean to each input (Song et al., ICCV 2023)",
        "the reference is the data's mean input; log-probability of the owner's answer",
    ),
    "cka": (
        compare_activations,
        "Linear CKA between the layers' representations, best layer pair (Kornblith et al. 2019; REEF)",
        "",
    ),
}
