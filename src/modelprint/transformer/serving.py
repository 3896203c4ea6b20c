"""A text encoder behind the Open Inference Protocol (KServe V2 REST), both sides.

Two kinds of endpoint, what embedding APIs and rerank APIs expose:

- ``embeddings``: input ``text`` (BYTES, [N]) -> output ``embedding`` (FP32, [N, D]);
- ``ranks``: inputs ``query`` (BYTES, [N]) and ``candidates`` (BYTES, [M]) -> output ``ranking`` (INT64, [N, k]):
  each query's ``k`` best candidates (``parameters.top_k``, default 10), best first. No score is revealed.

``Texts`` is what ``modelprint.serve.create_app`` serves for a ``SentenceEncoder`` (authentication, limits and
logging are the server's); ``RemoteEncoder`` is the client, with the classifier client's retries, timeouts and
validation of every answer. Both count a text once per request it is sent in.
"""

from __future__ import annotations

import uuid

import numpy as np
import torch

from ..errors import BudgetExceededError, ConfigError
from ..remote import RemoteError, RemoteModel, _array
from .text import SentenceEncoder

MAX_CHARS = 4096  # per text: longer ones are cut by the tokenizer anyway
TOP_K = 10


def rank(encoder, queries: list[str], candidates: list[str], k: int = TOP_K) -> torch.Tensor:
    """Each query's ``k`` most similar candidates by cosine of their embeddings, best first (N, k)."""
    q, c = encoder.encode(queries), encoder.encode(candidates)
    return (q @ c.T).topk(min(k, len(candidates)), dim=1).indices


class Texts:
    """What an encoder's endpoint reads and answers."""

    def __init__(self, encoder: SentenceEncoder, output: str, max_batch: int):
        if output not in ("embeddings", "ranks"):
            raise ConfigError(f"a text encoder is served as embeddings or ranks, not {output!r}")
        self.encoder, self.output, self.max_batch = encoder, output, max_batch
        self.max_body = 2 * max_batch * (MAX_CHARS * 6 + 8) + 65536  # JSON escapes at most 6 bytes per character

    def tensors(self) -> tuple[list[dict], list[dict]]:
        if self.output == "embeddings":
            width = int(self.encoder.bert.config.hidden_size)
            return ([{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                    [{"name": "embedding", "datatype": "FP32", "shape": [-1, width]}])  # fmt: skip
        return ([{"name": "query", "datatype": "BYTES", "shape": [-1]},
                 {"name": "candidates", "datatype": "BYTES", "shape": [-1]}],
                [{"name": "ranking", "datatype": "INT64", "shape": [-1, -1]}])  # fmt: skip

    def decode(self, body) -> tuple[dict, int]:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise ValueError("request must be an object with an 'inputs' list")
        wanted = ("text",) if self.output == "embeddings" else ("query", "candidates")
        named = {t.get("name"): t for t in body["inputs"] if isinstance(t, dict)}
        if sorted(named) != sorted(wanted) or len(body["inputs"]) != len(wanted):
            raise ValueError(f"inputs must be exactly {', '.join(wanted)} (BYTES tensors)")
        texts = {name: _texts(named[name], name, self.max_batch) for name in wanted}
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise ValueError("parameters must be an object")
        top = params.get("top_k", TOP_K)
        if self.output == "ranks" and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise ValueError(f"parameters.top_k must be a positive integer, got {top!r}")
        return {"texts": texts, "top_k": top}, sum(len(t) for t in texts.values())

    def answer(self, request: dict) -> list[dict]:
        texts = request["texts"]
        if self.output == "embeddings":
            out = self.encoder.encode(texts["text"])
            return [{"name": "embedding", "datatype": "FP32", "shape": list(out.shape), "data": out.flatten().tolist()}]
        out = rank(self.encoder, texts["query"], texts["candidates"], request["top_k"])
        return [{"name": "ranking", "datatype": "INT64", "shape": list(out.shape), "data": out.flatten().tolist()}]


def _texts(tensor: dict, name: str, max_batch: int) -> list[str]:
    data, shape = tensor.get("data"), tensor.get("shape")
    if tensor.get("datatype") != "BYTES":
        raise ValueError(f"input {name!r} must be BYTES (strings), got {tensor.get('datatype')!r}")
    if not isinstance(data, list) or not isinstance(shape, list) or shape != [len(data)]:
        raise ValueError(f"input {name!r} must be a list of strings with shape [N]")
    if not 0 < len(data) <= max_batch:
        raise ValueError(f"input {name!r} must hold 1..{max_batch} texts, got {len(data)}")
    if not all(isinstance(t, str) and 0 < len(t) <= MAX_CHARS for t in data):
        raise ValueError(f"input {name!r} must hold non-empty strings of at most {MAX_CHARS} characters")
    return data


class RemoteEncoder(RemoteModel):
    """A text encoder served at ``url`` as ``model_name``, answering ``embeddings`` or ``ranks``. ``budget`` caps
    the texts sent (a rerank request sends its queries and its candidates)."""

    def __init__(self, url: str, model_name: str, output: str = "embeddings", **options):
        if output not in ("embeddings", "ranks"):
            raise ConfigError(f"a remote encoder answers embeddings or ranks, not {output!r}")
        self.kind = output
        super().__init__(url, model_name, "probs", **options)

    def __repr__(self) -> str:
        return f"RemoteEncoder({self.url}/v2/models/{self.model_name}, {self.kind})"

    def _metadata(self) -> dict:
        self._request("GET", "/v2/health/ready")
        meta = self._request("GET", f"/v2/models/{self.model_name}")
        where = f"{self.url}/v2/models/{self.model_name}"
        inputs = meta.get("inputs")
        wanted = ["text"] if self.kind == "embeddings" else ["candidates", "query"]
        if not isinstance(inputs, list) or sorted(str(t.get("name")) for t in inputs if isinstance(t, dict)) != wanted:
            raise RemoteError(f"{where}: not a text {self.kind} endpoint (its inputs are not {', '.join(wanted)})")
        if any(t.get("datatype") != "BYTES" for t in inputs):
            raise RemoteError(f"{where}: a text endpoint's inputs are BYTES")
        return meta

    def _spend(self, n: int) -> None:
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExceededError(
                f"{self!r}: {n} more texts would exceed the budget of {self.budget} ({self.queries} spent)"
            )

    def _infer(self, inputs: dict[str, list[str]], output: str, parameters: dict | None = None) -> np.ndarray:
        tensors = [{"name": k, "datatype": "BYTES", "shape": [len(v)], "data": list(v)} for k, v in inputs.items()]
        body = {"id": uuid.uuid4().hex, "outputs": [{"name": output}], "inputs": tensors,
                **({"parameters": parameters} if parameters else {})}  # fmt: skip
        answer = self._request("POST", f"/v2/models/{self.model_name}/infer", body)
        where = f"{self!r} infer"
        outs = answer.get("outputs")
        named = [o for o in outs if isinstance(o, dict) and o.get("name") == output] if isinstance(outs, list) else []
        if len(named) != 1:
            raise RemoteError(f"{where}: response has no single output named {output!r}")
        o = named[0]
        shape, data = o.get("shape"), o.get("data")
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise RemoteError(f"{where}: output {output!r} has no valid [N, D] shape ({shape!r})")
        if not isinstance(data, list) or len(data) != shape[0] * shape[1]:
            raise RemoteError(f"{where}: output {output!r} of shape {shape} carries the wrong number of values")
        first = next(iter(inputs.values()))
        if shape[0] != len(first):
            raise RemoteError(f"{where}: sent {len(first)} texts, output {output!r} has {shape[0]} rows")
        return _array(data, np.float64 if output == "embedding" else np.int64, where).reshape(shape)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of ``texts`` (N, D), asked in batches; each text counts once."""
        if self.kind != "embeddings":
            raise ConfigError(f"{self!r} answers rankings, not embeddings")
        self._spend(len(texts))
        out = []
        for i in range(0, len(texts), self.batch_size):
            chunk = list(texts[i : i + self.batch_size])
            out.append(torch.from_numpy(self._infer({"text": chunk}, "embedding")).float())
            self.queries += len(chunk)
        return torch.cat(out)

    def rank(self, queries: list[str], candidates: list[str], k: int = TOP_K) -> torch.Tensor:
        """Each query's ``k`` best candidates (N, k), best first."""
        if self.kind != "ranks":
            raise ConfigError(f"{self!r} answers embeddings, not rankings")
        if len(candidates) > self.batch_size:
            raise ConfigError(f"{len(candidates)} candidates exceed the {self.batch_size} texts a request holds")
        out = []
        step = max(1, self.batch_size - len(candidates))
        for i in range(0, len(queries), step):
            chunk = list(queries[i : i + step])
            self._spend(len(chunk) + len(candidates))
            got = self._infer({"query": chunk, "candidates": list(candidates)}, "ranking", {"top_k": k})
            if got.shape[1] != min(k, len(candidates)) or (got < 0).any() or (got >= len(candidates)).any():
                raise RemoteError(f"{self!r} infer: a ranking must list {min(k, len(candidates))} candidate indices")
            out.append(torch.from_numpy(got))
            self.queries += len(chunk) + len(candidates)
        return torch.cat(out)
