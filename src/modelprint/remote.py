"""Suspects behind an endpoint: a client of the Open Inference Protocol (KServe V2 REST, as spoken by KServe,
Triton and Seldon MLServer). ``RemoteModel`` is a ``Model`` like any other, so every black-box scheme verifies
over HTTP unchanged.

Every response is validated (JSON object, the output tensor's name, datatype, shape and values) and a bad one
fails with the URL and what was wrong; an answer larger than ``max_response`` bytes, or slower than ``timeout``
seconds in all, is abandoned. Requests that fail with 5xx or a transport error are retried with exponential
backoff, as is a 429 that says when to come back (``Retry-After``); a 429 without it is a spent limit and fails at
once. Each request carries an id, so a server may recognise a retry. A model asked for labels that answers
probabilities is read through their argmax.
The query counter counts an input once, when its answer has been received and validated; the budget is checked
before anything is sent.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .access import Model
from .errors import AccessError, BudgetExceededError, ConfigError

# V2 datatypes and the numpy types their JSON data is read as.
FLOATS = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
INTS = {n: getattr(np, n.lower()) for n in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")}


class RemoteError(AccessError):
    """The endpoint answered something that is not a valid V2 response (or did not answer)."""


class RemoteModel(Model):
    """A model served at ``url`` under ``model_name``; ``output`` says whether its output tensor holds labels
    (N,) or (N, 1) integers, or probabilities (N, C). The input shape and the number of classes come from the
    model's metadata where it states them (or pass them)."""

    def __init__(
        self,
        url: str,
        model_name: str,
        output: Literal["labels", "probs"] = "labels",
        *,
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        budget: int | None = None,
        batch_size: int = 64,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.25,
        headers: dict[str, str] | None = None,
        api_key: str | None = None,
        max_response: int = 64 * 2**20,
        transport=None,
    ):
        import httpx

        if output not in ("labels", "probs"):
            raise ConfigError(f"a remote model answers 'labels' or 'probs', not {output!r}")
        if batch_size < 1 or retries < 0 or timeout <= 0:
            raise ConfigError(
                f"need batch_size >= 1, retries >= 0, timeout > 0; got {batch_size}, {retries}, {timeout}"
            )
        super().__init__(num_classes, input_shape, budget)
        self.url, self.model_name, self.output = url.rstrip("/"), model_name, output
        self.batch_size, self.retries, self.backoff = batch_size, retries, backoff
        self.timeout, self.max_response = timeout, max_response
        self.requests = 0  # HTTP requests sent, retries included
        headers = {**(headers or {}), **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self._meta = self._metadata()

    def __repr__(self) -> str:
        return f"RemoteModel({self.url}/v2/models/{self.model_name})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- protocol ---
    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One request with retries; the decoded JSON object of its 200 answer."""
        import httpx

        url = f"{self.url}{path}"
        for attempt in range(self.retries + 1):
            self.requests += 1
            wait = self.backoff * 2**attempt
            try:
                status, headers, raw = self._send(method, url, body)
            except httpx.TransportError as e:
                problem = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                if status == 200:
                    return _json(raw, url)
                problem = f"HTTP {status}: {_snippet(raw.decode(errors='replace'))}"
                later = headers.get("retry-after")
                if status < 500 and not (status == 429 and later is not None):
                    raise RemoteError(f"{method} {url} failed with {problem}")
                wait = max(wait, _retry_after(later))
            if attempt < self.retries:
                time.sleep(min(wait, 30.0))
        raise RemoteError(f"{method} {url} failed after {self.retries + 1} attempts; last: {problem}")

    def _send(self, method: str, url: str, body: dict | None):
        """Status, headers and body of one exchange, reading at most max_response bytes within timeout seconds."""
        deadline = time.monotonic() + self.timeout
        with self._client.stream(method, url, json=body) as r:
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_response:
                raise RemoteError(f"{method} {url}: answer of {declared} bytes exceeds {self.max_response}")
            chunks, size = [], 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > self.max_response:
                    raise RemoteError(f"{method} {url}: answer exceeds {self.max_response} bytes")
                if time.monotonic() > deadline:
                    raise RemoteError(f"{method} {url}: answer took longer than {self.timeout:g} s")
                chunks.append(chunk)
            return r.status_code, r.headers, b"".join(chunks)

    def _metadata(self) -> dict:
        self._request("GET", "/v2/health/ready")
        meta = self._request("GET", f"/v2/models/{self.model_name}")
        where = f"{self.url}/v2/models/{self.model_name}"
        inputs, outputs = meta.get("inputs"), meta.get("outputs")
        if not _tensor_list(inputs) or not _tensor_list(outputs):
            raise RemoteError(f"{where}: metadata lacks 'inputs' and 'outputs' lists of tensors with name, shape")
        if len(inputs) != 1:
            raise RemoteError(f"{where}: modelprint queries models with one input tensor; this one has {len(inputs)}")
        shape = inputs[0]["shape"]
        if self._input_shape is None and len(shape) > 1 and all(isinstance(d, int) and d > 0 for d in shape[1:]):
            self._input_shape = tuple(shape[1:])
        out = outputs[0]["shape"]
        if self.output == "probs" and self._num_classes is None and len(out) == 2 and isinstance(out[1], int):
            self._num_classes = out[1] if out[1] > 0 else None
        return meta

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:  # one batch; _query splits and counts
        input_meta, output_meta = self._meta["inputs"][0], self._meta["outputs"][0]
        datatype = input_meta.get("datatype", "FP32")
        if datatype not in FLOATS:
            raise RemoteError(f"{self!r}: the model's input is {datatype}; modelprint sends FP16/FP32/FP64 inputs")
        body = {
            "id": uuid.uuid4().hex,
            "inputs": [{"name": input_meta["name"], "shape": list(x.shape), "datatype": datatype,
                        "data": x.detach().cpu().numpy().astype(FLOATS[datatype]).ravel().tolist()}],
            "outputs": [{"name": output_meta["name"]}],
        }  # fmt: skip
        answer = self._request("POST", f"/v2/models/{self.model_name}/infer", body)
        return self._decode(answer, output_meta["name"], len(x))

    def _decode(self, answer: dict, name: str, n: int) -> torch.Tensor:
        where = f"{self!r} infer"
        outputs = answer.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise RemoteError(f"{where}: response has no 'outputs' list")
        named = [o for o in outputs if o.get("name") == name]
        if len(named) != 1:
            raise RemoteError(f"{where}: response has {len(named)} outputs named {name!r}")
        o = named[0]
        datatype, shape, data = o.get("datatype"), o.get("shape"), o.get("data")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise RemoteError(f"{where}: output {name!r} has no valid shape ({shape!r})")
        if not isinstance(data, list) or len(data) != math.prod(shape):
            size = len(data) if isinstance(data, list) else type(data).__name__
            raise RemoteError(f"{where}: output {name!r} of shape {shape} carries {size} values")
        if not shape or shape[0] != n:
            raise RemoteError(f"{where}: sent {n} inputs, output {name!r} has shape {shape}")
        if self.output == "labels" and datatype in FLOATS and len(shape) == 2 and shape[1] > 1:
            return torch.from_numpy(_array(data, np.float64, where).reshape(shape).argmax(1))  # probs: top label
        if self.output == "labels":
            if datatype not in INTS:
                raise RemoteError(f"{where}: labels must be an integer datatype, got {datatype!r}")
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise RemoteError(f"{where}: labels must have shape [N] or [N, 1], got {shape}")
            values = _array(data, np.int64, where)
            return torch.from_numpy(values.reshape(n))
        if datatype not in FLOATS:
            raise RemoteError(f"{where}: probabilities must be FP16/FP32/FP64, got {datatype!r}")
        if len(shape) != 2:
            raise RemoteError(f"{where}: probabilities must have shape [N, C], got {shape}")
        return torch.from_numpy(_array(data, np.float64, where).reshape(shape)).float()

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_inputs(x)
        if self.budget is not None and self.queries + len(x) > self.budget:
            raise BudgetExceededError(
                f"{self!r}: {len(x)} more queries would exceed the budget of {self.budget} ({self.queries} spent)"
            )
        if not len(x):  # nothing to ask (torch splits an empty batch into one empty chunk)
            return torch.empty(0, dtype=torch.long) if self.output == "labels" else torch.empty(0, self.num_classes)
        answers = []
        for batch in x.split(self.batch_size):
            answers.append(self._check_outputs(self._outputs(batch), len(batch)))
            self.queries += len(batch)  # answered and valid: counted once, whatever retries it took
        return torch.cat(answers)


def _json(raw: bytes, url: str) -> dict:
    try:
        body = json.loads(raw)
    except ValueError:
        raise RemoteError(f"{url}: answer is not JSON ({_snippet(raw.decode(errors='replace'))})") from None
    if not isinstance(body, dict):
        raise RemoteError(f"{url}: answer is JSON {type(body).__name__}, not an object")
    return body


def _snippet(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[:n] + "...")


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:  # an HTTP date: not worth parsing for a short wait
        return 0.0


def _tensor_list(v) -> bool:
    return (
        isinstance(v, list)
        and bool(v)
        and all(isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("shape"), list) for t in v)
    )


def _array(data: list, dtype, where: str) -> np.ndarray:
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in data):
        raise RemoteError(f"{where}: output data holds non-numeric values")
    values = np.asarray(data, dtype=np.float64)
    if not np.isfinite(values).all():
        raise RemoteError(f"{where}: output data holds NaN or infinite values")
    if dtype is np.int64:
        if (values != np.round(values)).any():
            raise RemoteError(f"{where}: integer output holds fractional values")
        return values.astype(np.int64)
    return values
