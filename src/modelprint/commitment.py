"""Public fingerprint release (the seed mind map's idea): at release, an owner publishes a short commitment to a
calibrated fingerprint; later, anyone can check a suspect against the queries the owner opens, knowing that those
queries, the owner's answers and the decision rule were fixed before the suspect existed.

The commitment is the root of a Merkle tree (sha256, with distinct prefixes for leaves and nodes so that a node
cannot pass for a leaf). Leaf 0 commits the *statement*: the fingerprint's header (scheme, data, budget, its
calibration: null scores, strata, target FPR) and every tensor that is not one query's; leaf ``i >= 1`` commits
query ``i - 1`` and the owner's answer to it. Every leaf is salted with 32 random bytes, so the root discloses
nothing about the queries, the answers or the model (short of breaking sha256).

An opening reveals the statement and some of the queries, each with its salt and its path to the root. Which
ones is not the owner's choice: either all of them (the check is then exactly ``verify`` on the fingerprint), or
the ``k`` drawn from the root and a ``challenge`` the checker names (a date, their name, the suspect's digest), so
that an owner cannot open only the queries a suspect happens to agree on. A partial opening is decided by the
agreement among the opened queries against the committed null models' agreement rates, each drawn ``k`` of the
``n`` queries at random (a hypergeometric mixture; conformal in the null models); it needs a label-agreement
scheme (one answer compared per query).

Threat model (docs/threat-model.md has the long form). A cheating *owner* cannot change queries, answers or
null scores after publishing (a change breaks a path to the root), cannot pick favourable queries in a partial
opening (the challenge picks them), and cannot learn anything about a suspect before committing; they can commit
to a fingerprint with a generous null (few or easy null models; the statement shows it, so a checker can refuse
it) and publish several commitments (publish the one commitment where it will be found, e.g. in the model card).
A cheating *suspect* learns the opened queries once they are opened, and can answer them differently from then
on: open few queries per check (a partial opening) and keep the rest for later checks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import container
from .digest import tensors_digest
from .errors import ConfigError, FileFormatError
from .verdict import Verdict

if TYPE_CHECKING:
    from .fingerprint.file import Fingerprint

FORMAT, OPENING_FORMAT, SECRET_FORMAT, VERSION = "modelprint-commitment", "modelprint-opening", "modelprint-secret", 1
SALT = 32


def leaf(salt: bytes, payload: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + salt + payload).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first; an odd node out is carried up unchanged."""
    out = [leaves]
    while len(out[-1]) > 1:
        level = out[-1]
        out.append([node(*level[i : i + 2]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)])
    return out


def path(tree: list[list[bytes]], index: int) -> list[bytes]:
    """The siblings from leaf ``index`` up to the root (a carried node has none at that level: skipped)."""
    out = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            out.append(level[sibling])
        index //= 2
    return out


def climb(digest: bytes, index: int, siblings: list[bytes], leaves: int) -> bytes:
    """The root that leaf ``index`` of ``leaves`` with hash ``digest`` and path ``siblings`` leads to."""
    it = iter(siblings)
    width = leaves
    while width > 1:
        if index ^ 1 < width:
            sibling = next(it, None)
            if sibling is None:
                return b""
            digest = node(sibling, digest) if index & 1 else node(digest, sibling)
        index, width = index // 2, (width + 1) // 2
    return digest if next(it, None) is None else b""


def statement(fp) -> bytes:
    """What leaf 0 commits: the fingerprint's header (less the version of modelprint that wrote it) and a digest
    of its tensors other than the queries and answers (its null scores, any auxiliary tensors)."""
    header = {k: v for k, v in fp.header().items() if k != "modelprint_version"}
    return json.dumps({"header": header, "tensors": tensors_digest("", rest(fp.tensors()))}, sort_keys=True).encode()


def rest(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if k not in ("queries", "responses", "salts")}


def row(query: torch.Tensor, response: torch.Tensor) -> bytes:
    """One query and the owner's answer as bytes that do not depend on the machine (little-endian)."""
    answer = response.numpy()
    return query.numpy().astype("<f4").tobytes() + answer.astype(answer.dtype.newbyteorder("<")).tobytes()


def challenged(root: str, challenge: str, k: int, n: int) -> list[int]:
    """The ``k`` query indices a ``challenge`` opens, so that neither side picks them: the distinct values of
    ``sha256(root, challenge, j) mod n`` for ``j = 0, 1, ...`` (hashes only, so that every machine and every
    version of every library draws the same ones)."""
    if not 1 <= k <= n:
        raise ConfigError(f"can open 1 to {n} queries, not {k}")
    drawn: set[int] = set()
    for j in itertools.count():
        if len(drawn) == k:
            return sorted(drawn)
        drawn.add(int.from_bytes(hashlib.sha256(f"{root}\n{challenge}\n{j}".encode()).digest(), "big") % n)


@dataclass(frozen=True)
class Commitment:
    """What an owner publishes: the Merkle root over the fingerprint's salted statement and queries."""

    root: str
    leaves: int

    def save(self, file: str | Path) -> Path:
        header = {"format": FORMAT, "format_version": VERSION, "root": self.root, "leaves": self.leaves}
        return container.write(file, header, {})

    @classmethod
    def load(cls, file: str | Path) -> Commitment:
        header, tensors = container.peek(file, "commitment")
        fields = {"format": str, "format_version": int, "root": str, "leaves": int}
        h = container.check(file, header, tensors, FORMAT, VERSION, fields, "commitment")
        if len(h["root"]) != 64 or h["leaves"] < 2:
            raise FileFormatError(f"{file}: not a sha256 root over at least 2 leaves")
        return cls(h["root"], h["leaves"])

    def __str__(self) -> str:
        return f"{FORMAT}:v{VERSION}:{self.leaves}:{self.root}"


@dataclass(frozen=True, eq=False)
class Committed:
    """The owner's side: the fingerprint and its salts (keep them secret: they open any query)."""

    fingerprint: Fingerprint
    salts: torch.Tensor  # (1 + budget, SALT) uint8

    def tree(self) -> list[list[bytes]]:
        fp, salts = self.fingerprint, [bytes(s.tolist()) for s in self.salts]
        rows = [row(q, r) for q, r in zip(fp.queries, fp.responses, strict=True)]
        return levels(
            [leaf(salts[0], statement(fp))] + [leaf(salt, r) for salt, r in zip(salts[1:], rows, strict=True)]
        )

    @property
    def commitment(self) -> Commitment:
        tree = self.tree()
        return Commitment(tree[-1][0].hex(), len(tree[0]))

    def save(self, file: str | Path) -> Path:
        header = {**self.fingerprint.header(), "format": SECRET_FORMAT, "format_version": VERSION}
        return container.write(file, header, {**self.fingerprint.tensors(), "salts": self.salts})

    @classmethod
    def load(cls, file: str | Path) -> Committed:
        from .fingerprint.file import _FIELDS, _OPTIONAL, _from_parts

        header, tensors = container.peek(file, "commitment secret")
        h = container.check(file, header, tensors, SECRET_FORMAT, VERSION, _FIELDS, "commitment secret", _OPTIONAL)
        salts = tensors.pop("salts", None)
        fp = _from_parts(Path(file), h, tensors)
        if salts is None or salts.dtype != torch.uint8 or tuple(salts.shape) != (1 + fp.budget, SALT):
            raise FileFormatError(f"{file}: its salts are missing or not ({1 + fp.budget}, {SALT}) bytes")
        return cls(fp, salts)

    def open(self, k: int | None = None, challenge: str | None = None) -> Opening:
        """Every query, or the ``k`` that the checker's ``challenge`` draws."""
        fp = self.fingerprint
        if (k is None) != (challenge is None):
            raise ConfigError("a partial opening needs both k and the checker's challenge; omit both to open all")
        tree = self.tree()
        indices = list(range(fp.budget)) if k is None else challenged(tree[-1][0].hex(), challenge, k, fp.budget)
        return Opening(
            statement(fp).decode(), rest(fp.tensors()), indices, fp.queries[indices], fp.responses[indices],
            self.salts[[0, *(1 + i for i in indices)]], [path(tree, 1 + i) for i in indices], path(tree, 0),
        )  # fmt: skip


@dataclass(frozen=True, eq=False)
class Opening:
    """What the owner hands a checker: the statement, the opened queries and answers, their salts and paths."""

    statement: str
    tensors: dict[str, torch.Tensor]  # the statement's tensors: null scores, any auxiliary ones
    indices: list[int]
    queries: torch.Tensor
    responses: torch.Tensor
    salts: torch.Tensor  # the statement's, then one per opened query
    paths: list[list[bytes]]
    statement_path: list[bytes]

    def proves(self, commitment: Commitment) -> bool:
        """Does the statement, and every opened query with its answer, lead to the committed root?"""
        root, n, salts = bytes.fromhex(commitment.root), commitment.leaves, [bytes(s.tolist()) for s in self.salts]
        try:
            digest = json.loads(self.statement)["tensors"]
        except (ValueError, KeyError, TypeError):
            return False
        if digest != tensors_digest("", self.tensors) or climb(leaf(salts[0], self.statement.encode()), 0,
                                                                   self.statement_path, n) != root:  # fmt: skip
            return False
        rows = zip(self.indices, self.queries, self.responses, salts[1:], self.paths, strict=True)
        return all(climb(leaf(salt, row(q, r)), 1 + i, p, n) == root for i, q, r, salt, p in rows)

    def fingerprint(self) -> Fingerprint:
        """The committed fingerprint restricted to the opened queries (all of it for a full opening)."""
        from .fingerprint.file import _from_parts

        header = {**json.loads(self.statement)["header"], "budget": len(self.indices)}
        return _from_parts(Path("opening"), header, {**self.tensors, "queries": self.queries,
                                                     "responses": self.responses})  # fmt: skip

    @property
    def budget(self) -> int:
        """How many queries the committed fingerprint has."""
        return int(json.loads(self.statement)["header"]["budget"])

    def save(self, file: str | Path) -> Path:
        header = {"format": OPENING_FORMAT, "format_version": VERSION, "statement": self.statement,
                  "indices": self.indices, "paths": [[h.hex() for h in p] for p in self.paths],
                  "statement_path": [h.hex() for h in self.statement_path]}  # fmt: skip
        tensors = {**self.tensors, "queries": self.queries, "responses": self.responses, "salts": self.salts}
        return container.write(file, header, tensors)

    @classmethod
    def load(cls, file: str | Path) -> Opening:
        header, tensors = container.peek(file, "opening")
        fields = {"format": str, "format_version": int, "statement": str, "indices": list, "paths": list,
                  "statement_path": list}  # fmt: skip
        h = container.check(file, header, tensors, OPENING_FORMAT, VERSION, fields, "opening")
        try:
            paths = [[bytes.fromhex(x) for x in p] for p in h["paths"]]
            statement_path = [bytes.fromhex(x) for x in h["statement_path"]]
            indices = [int(i) for i in h["indices"]]
            parts = [tensors.pop(k) for k in ("queries", "responses", "salts")]
        except (ValueError, TypeError, KeyError) as e:
            raise FileFormatError(f"{file}: malformed opening ({e})") from None
        if not len(indices) == len(paths) == len(parts[0]) == len(parts[1]) == len(parts[2]) - 1:
            raise FileFormatError(f"{file}: its indices, paths, queries, answers and salts do not match in number")
        return cls(h["statement"], tensors, indices, *parts, paths, statement_path)


def commit(fingerprint: Fingerprint) -> Committed:
    """Salt a calibrated fingerprint and build its tree; publish ``.commitment``, keep the ``Committed``."""
    if fingerprint.null_scores is None:
        raise ConfigError("commit a calibrated fingerprint: its decision rule (the null) is part of what is committed")
    salts = torch.frombuffer(bytearray(secrets.token_bytes(SALT * (1 + fingerprint.budget))), dtype=torch.uint8)
    return Committed(fingerprint, salts.view(1 + fingerprint.budget, SALT))


def check(commitment: Commitment, opening: Opening, suspect, *, challenge: str | None = None, **options) -> Verdict:
    """Does ``suspect`` answer the opened queries like the committed owner? Refuses an opening that does not lead
    to the root, or a partial one whose queries ``challenge`` does not draw."""
    from .fingerprint.api import verify

    if not opening.proves(commitment):
        raise ConfigError("the opening does not match the commitment: a query, an answer or the rule was changed")
    n, k = opening.budget, len(opening.indices)
    if k == n and opening.indices == list(range(n)):
        v = verify(opening.fingerprint(), suspect, **options)
        return replace(v, evidence={**v.evidence, "commitment": str(commitment), "opened": n})
    if challenge is None or challenged(commitment.root, challenge, k, n) != opening.indices:
        raise ConfigError("a partial opening must open exactly the queries the checker's challenge draws")
    return partial(opening.fingerprint(), n, suspect, commitment, **options)


def partial(fp: Fingerprint, n: int, suspect, commitment: Commitment, alpha: float | None = None, cache_dir=None,
            device: str = "cpu") -> Verdict:  # fmt: skip
    """Agreement on the ``k`` opened queries of ``fp`` against each of the ``m`` null models' committed agreement
    over all ``n``, drawn ``k`` at random: ``p = (1 + sum_j P(H_j >= c)) / (1 + m)``, ``H_j`` hypergeometric."""
    from scipy import stats

    from .decide import check_alpha
    from .lineage import resolve_model

    if fp.scheme.needs != "labels" or fp.unit != 1 or fp.aux or fp.scale.name != "rate":
        raise ConfigError(f"{fp.scheme.label} is not decided query by query: open all its queries")
    alpha = fp.target_fpr if alpha is None else alpha
    check_alpha(alpha)
    k, m = fp.budget, len(fp.null_scores)
    answers = resolve_model(suspect, fp.input_shape, fp.num_classes, cache_dir, device).labels(fp.queries)
    agreed = int((answers == fp.responses).sum())
    nulls = stats.hypergeom(n, np.rint(np.clip(fp.null_scores, 0, 1) * n).astype(int), k)

    def tail(c: int) -> float:
        return float((1 + nulls.sf(c - 1).sum()) / (1 + m))

    p = tail(agreed)
    least = next((c for c in range(k + 1) if tail(c) <= alpha), None)
    outcome = "related" if p <= alpha else "not related" if least is not None else "inconclusive"
    return Verdict(
        score=agreed / k, threshold=math.inf if least is None else (least - 0.5) / k, p_value=p, related=p <= alpha,
        queries=k, alpha=alpha, scheme=f"committed:{fp.scheme.label}", outcome=outcome,
        method=f"conformal over {m} committed null models (all strata), each drawn {k} of {n} queries (hypergeometric)",
        warnings=() if least is not None else (
            f"with {m} committed null models no opening reaches p <= {alpha:g}" if 1 / (1 + m) > alpha
            else f"{k} opened queries cannot reach p <= {alpha:g}: open more",
        ),
        evidence={"commitment": str(commitment), "opened": k, "agreed": agreed},
    )  # fmt: skip
