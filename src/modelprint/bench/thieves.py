"""The generalization benchmark's attacks: extraction recipes a detector must catch without having seen them,
and the copy tasks, as lineage steps of a source (``{arch}`` and ``{seed}`` are filled per positive).

Fingerprints whose queries are chosen with surrogates are evaluated leave-one-recipe-out: the surrogates that
choose the queries for recipe R are built with the other recipes, never with R (``surrogates_for``)."""

from __future__ import annotations

from ..lineage import Op, step

EXTRACTION: dict[str, str] = {
    "own data": "label_extract({arch},{seed},queries=own)",
    "mixup": "label_extract({arch},{seed})",
    "augmented": "label_extract({arch},{seed},queries=augment)",
    "natural images (Knockoff)": "label_extract({arch},{seed},queries=natural)",
    "true labels + answers": "label_extract({arch},{seed},queries=own,true_labels=true)",
    "SGD, 20 epochs": "label_extract({arch},{seed},queries=own,optimizer=sgd,lr=0.05,epochs=20)",
    "distill T=4": "distill({arch},{seed},queries=own,temperature=4.0)",
    "Jacobian (Papernot)": "jacobian_extract({arch},{seed})",
    "data-free (DFME)": "dfme({arch},{seed})",
}
COPIES: dict[str, str] = {
    "finetune": "finetune({seed})",
    "prune 70% global": "prune(0.7)",
    "prune 50% per layer": "prune(0.5,scope=layer)",
    "structured prune + finetune": "prune(0.5,structured=true)->finetune({seed})",
    "quantize int8": "quantize(int8)",
    "weight noise": "noise(0.1,{seed})",
    "permute + finetune": "permute({seed})->finetune({seed})",
    "boundary randomisation": "randomize_boundary({seed})",
}


def positive(template: str, arch: str, seed: int) -> str:
    return template.format(arch=arch, seed=seed)


def surrogates_for(held_out: str, archs: tuple[str, ...], seed: int = 3001) -> list[str]:
    """Surrogate steps for fingerprints scored on extraction recipe ``held_out``: one per other recipe, each with
    the same architecture and seed whichever recipe is held out (so they are built once), never ``held_out``."""
    return [
        positive(t, archs[i % len(archs)], seed + i)
        for i, (name, t) in enumerate(EXTRACTION.items())
        if name != held_out
    ]


def recipe(op: Op) -> tuple:
    """What two steps must differ in to be different recipes: everything but the seeds."""
    return op.name, tuple(sorted((k, v) for k, v in op.get_params().items() if k != "seed"))


def recipe_of(text: str) -> tuple:
    """The recipe of one step written as text (``"label_extract(mlp,3,queries=own)"``)."""
    return recipe(step(text))


def recipes_of(expr_tail: str) -> list[tuple]:
    """The recipes of every step of a chain of transformations."""
    return [recipe_of(s) for s in expr_tail.split("->")]
