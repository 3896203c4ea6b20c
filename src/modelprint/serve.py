"""Serve any model modelprint can load over the Open Inference Protocol (KServe V2 REST), with FastAPI: for owners
testing their verification pipeline, and for researchers simulating a victim's API.

Clients authenticate with API keys (``Authorization: Bearer KEY``) when the server is given any; the client is then
the key's name, else the peer address -- never anything the client writes in a header, which it could change per
request. Per-client query limits answer 429 once spent; a request whose id was already answered for that client is
answered again from memory (the last few thousand) and not counted twice; a body larger than the biggest valid
request is refused unread (413). Every request is logged as one JSON line on the ``modelprint.serve`` logger.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request  # at module level: FastAPI reads the handlers' annotations from here
from fastapi.responses import JSONResponse
from torch import nn

from . import __version__
from .access import Model, as_model
from .errors import ConfigError, ModelprintError
from .remote import FLOATS  # the protocol's float datatypes, shared with the client

log = logging.getLogger("modelprint.serve")
REMEMBERED = 4096  # answered request ids kept per server, for retries
MIN_KEY_LENGTH = 16


def load_api_keys(path: str | Path) -> dict[str, str]:
    """The API keys in ``path``, as {key: client name}: one ``NAME KEY`` per line, ``#`` starts a comment. Keys
    must be at least 16 characters (``python -c "import secrets; print(secrets.token_urlsafe())"`` makes one)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the API keys ({e})") from None
    keys: dict[str, str] = {}
    for i, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ConfigError(f"{path}:{i}: expected 'NAME KEY', got {len(fields)} fields")
        name, key = fields
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"{path}:{i}: the key of {name!r} is shorter than {MIN_KEY_LENGTH} characters")
        if key in keys or name in keys.values():
            raise ConfigError(f"{path}:{i}: {name!r} or its key appears twice")
        keys[key] = name
    if not keys:
        raise ConfigError(f"{path}: no API keys (one 'NAME KEY' per line)")
    return keys


class Tensors:
    """What a classifier's endpoint reads and answers: a float tensor of inputs, labels or probabilities."""

    def __init__(self, model: Model | nn.Module, output: str, max_batch: int):
        if output not in ("labels", "probs"):
            raise ConfigError(f"--output must be labels or probs, got {output!r}")
        self.model, self.output, self.max_batch = as_model(model), output, max_batch
        self.shape = list(self.model.input_shape)
        # the largest valid body: max_batch inputs of up to ~32 characters per number in JSON, plus the envelope
        self.max_body = max_batch * math.prod(self.shape) * 32 + 65536

    def tensors(self) -> tuple[list[dict], list[dict]]:
        classes = self.model.num_classes if self.output == "probs" else None
        out_shape = [-1, classes] if self.output == "probs" else [-1]
        return (
            [{"name": "input", "datatype": "FP32", "shape": [-1, *self.shape]}],
            [{"name": "output", "datatype": "FP32" if self.output == "probs" else "INT64", "shape": out_shape}],
        )

    def decode(self, body) -> tuple[torch.Tensor, int]:
        x = _decode(body, self.shape, self.max_batch)
        return x, len(x)

    def answer(self, x: torch.Tensor) -> list[dict]:
        out = (self.model.labels(x) if self.output == "labels" else self.model.probs(x)).detach().cpu()
        datatype = "INT64" if self.output == "labels" else "FP32"
        return [{"name": "output", "shape": list(out.shape), "datatype": datatype, "data": out.flatten().tolist()}]


def create_app(
    model: Model | nn.Module,
    name: str = "model",
    output: str = "labels",
    *,
    limit: int | None = None,
    max_batch: int = 1024,
    api_keys: Mapping[str, str] | None = None,
):
    """A FastAPI app serving ``model`` as ``name``: a classifier (whose input shape must be known) answering
    ``output`` labels or probs, or a text encoder answering ``embeddings`` or ``ranks``
    (``modelprint.transformer.serving``). ``api_keys`` ({key: client name}, see ``load_api_keys``) makes every
    model endpoint ask for one."""
    from .transformer.text import SentenceEncoder

    if limit is not None and limit < 1:
        raise ConfigError(f"the per-client limit must be positive, got {limit}")
    if isinstance(model, SentenceEncoder):
        from .transformer.serving import Texts

        served = Texts(model, output, max_batch)
    else:
        served = Tensors(model, output, max_batch)
    max_body = served.max_body
    keys = [(k.encode(), n) for k, n in (api_keys or {}).items()]
    used: dict[str, int] = {}
    answered: OrderedDict[tuple[str, str], dict] = OrderedDict()
    app = FastAPI(title=f"modelprint serve: {name}", version=__version__)

    def error(status: int, message: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def client_of(request: Request) -> str | None:
        """Who asks: the name of the presented API key (None if keys are set and it matches none), else the peer."""
        if not keys:
            return _peer(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = None
        for key, who in keys:  # compare with every key, in constant time each: timing tells nothing
            if hmac.compare_digest(key, token.strip().encode()):
                found = who
        return found

    async def read_body(request: Request) -> bytes | None:
        """The body, or None as soon as it exceeds max_body (a client cannot make the server buffer gigabytes)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/v2")
    def server_metadata():
        return {"name": "modelprint", "version": __version__, "extensions": []}

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    def health():
        return {}

    @app.get("/v2/models/{model_name}")
    def metadata(model_name: str, request: Request):
        if client_of(request) is None:
            return error(401, "missing or unknown API key (send Authorization: Bearer KEY)")
        if model_name != name:
            return error(404, f"no model named {model_name!r}; this server has {name!r}")
        inputs, outputs = served.tensors()
        return {"name": name, "versions": ["1"], "platform": "pytorch", "inputs": inputs, "outputs": outputs}

    @app.get("/v2/models/{model_name}/ready")
    def model_ready(model_name: str, request: Request):
        if client_of(request) is None:
            return error(401, "missing or unknown API key (send Authorization: Bearer KEY)")
        return {} if model_name == name else error(404, f"no model named {model_name!r}")

    @app.post("/v2/models/{model_name}/infer")
    async def infer(model_name: str, request: Request):
        start, client = time.perf_counter(), client_of(request)
        rows, status, request_id = 0, 200, None
        try:
            if client is None:
                status = 401
                return error(401, "missing or unknown API key (send Authorization: Bearer KEY)")
            if model_name != name:
                status = 404
                return error(404, f"no model named {model_name!r}")
            raw = await read_body(request)
            if raw is None:
                status = 413
                return error(413, f"request body over {max_body} bytes (batches of at most {max_batch} inputs)")
            try:
                body = json.loads(raw)
            except ValueError:
                status = 400
                return error(400, "request body is not JSON")
            request_id = body.get("id") if isinstance(body, dict) else None
            if isinstance(request_id, str) and (client, request_id) in answered:
                return answered[(client, request_id)]  # a retry of an answered request: not counted again
            try:
                x, rows = served.decode(body)
            except ValueError as e:
                status = 400
                return error(400, str(e))
            if limit is not None and used.get(client, 0) + rows > limit:
                status = 429
                return error(429, f"query limit of {limit} per client reached ({used.get(client, 0)} used)")
            try:
                outputs = served.answer(x)
            except ModelprintError as e:
                status = 500
                return error(500, f"the model failed: {e}")
            used[client] = used.get(client, 0) + rows
            answer = {"model_name": name, "model_version": "1", **({"id": request_id} if request_id else {}),
                      "outputs": outputs}  # fmt: skip
            if isinstance(request_id, str):
                answered[(client, request_id)] = answer
                while len(answered) > REMEMBERED:
                    answered.popitem(last=False)
            return answer
        finally:
            log.info(json.dumps({"time": time.time(), "client": client, "model": model_name, "id": request_id,
                                 "rows": rows, "status": status,
                                 "ms": round(1000 * (time.perf_counter() - start), 2)}))  # fmt: skip

    return app


def _peer(request) -> str:
    return request.client.host if request.client else "unknown"


def _decode(body, shape: list[int], max_batch: int) -> torch.Tensor:
    """The input batch of a V2 infer request; ValueError says what is wrong with it."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise ValueError("request must be an object with an 'inputs' list of exactly one tensor")
    t = body["inputs"][0]
    if not isinstance(t, dict):
        raise ValueError("input tensor must be an object")
    datatype, dims, data = t.get("datatype"), t.get("shape"), t.get("data")
    if datatype not in FLOATS:
        raise ValueError(f"input datatype must be FP16, FP32 or FP64, got {datatype!r}")
    if not isinstance(dims, list) or len(dims) != len(shape) + 1 or list(dims[1:]) != shape:
        raise ValueError(f"input shape must be [N, {', '.join(map(str, shape))}], got {dims!r}")
    if not isinstance(dims[0], int) or not 0 < dims[0] <= max_batch:
        raise ValueError(f"batch size must be 1..{max_batch}, got {dims[0]!r}")
    size = int(np.prod(dims))
    if not isinstance(data, list):
        raise ValueError(f"input data must be a list of {size} numbers")
    try:
        values = np.asarray(data, dtype=np.float64)  # flat, or nested row-major; ragged nesting fails here
    except (TypeError, ValueError):
        raise ValueError("input data holds non-numeric values or ragged lists") from None
    if values.size != size:
        raise ValueError(f"input data must hold {size} numbers, got {values.size}")
    if not np.isfinite(values).all():
        raise ValueError("input data holds NaN or infinite values")
    return torch.from_numpy(values.astype(FLOATS[datatype]).astype(np.float32).reshape(dims))


def start(app, host: str = "127.0.0.1", port: int = 0):
    """Run ``app`` with uvicorn in a background thread (tests, benchmarks, notebooks); returns its base URL and a
    function that stops it. ``port=0`` takes a free port."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise ConfigError(f"cannot serve on {host}:{port} (in use, or not an address of this machine?)")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(5)

    return f"http://{host}:{bound}", stop
