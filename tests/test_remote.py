"""The Open Inference Protocol client against the project's own server and against an independent V2 server
written here with the standard library, which can be told to misbehave."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from modelprint import data
from modelprint.access import WhiteBox
from modelprint.errors import BudgetExceededError, ConfigError
from modelprint.remote import RemoteError, RemoteModel
from modelprint.serve import create_app, start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served(source):
    """The project's server on localhost, serving the session's source model (labels, and probs as 'soft')."""
    from fastapi import FastAPI

    owner = WhiteBox(source.module, input_shape=(1, 8, 8))
    app = FastAPI()
    app.mount("/labels", create_app(owner, "owner", "labels", limit=5000))
    app.mount("/probs", create_app(owner, "owner", "probs"))
    app.mount("/anon", create_app(owner, "owner", "labels", limit=5000))
    app.mount("/keyed", create_app(owner, "owner", "labels", limit=5000, api_keys=KEYS))
    app.mount("/open", create_app(owner, "owner", "labels"))
    url, stop = start(app)
    yield url, owner
    stop()


KEYS = {"alice-0123456789abcdef": "alice", "bob-0123456789abcdef": "bob"}


class Script:
    """What the standard-library server does next: a queue of faults, then correct answers."""

    def __init__(self):
        self.faults: list[str] = []
        self.infer_requests = 0
        self.ids: list[str] = []


def stdlib_server(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status: int, body, content_type="application/json", headers=()):
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(raw)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            if self.path == "/v2/health/ready":
                self.send(200, {})
            elif self.path == "/v2/models/m":
                self.send(200, {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                                "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}]})  # fmt: skip
            else:
                self.send(404, {"error": "not found"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            script.infer_requests += 1
            script.ids.append(body.get("id"))
            x = torch.tensor(body["inputs"][0]["data"]).view(body["inputs"][0]["shape"])
            labels = (x.sum(1) > 0).long().tolist()  # the "model": is the sum positive?
            good = {"outputs": [{"name": "y", "datatype": "INT64", "shape": [len(labels)], "data": labels}]}
            fault = script.faults.pop(0) if script.faults else None
            if fault == "503":
                self.send(503, {"error": "busy"})
            elif fault == "429":
                self.send(429, {"error": "slow down"}, headers=[("retry-after", "0")])
            elif fault == "slow":
                time.sleep(2.5)
                self.send(200, good)
            elif fault == "html":
                self.send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            elif fault == "shape":
                self.send(200, {"outputs": [{**good["outputs"][0], "shape": [len(labels) + 1]}]})
            elif fault == "float":
                self.send(200, {"outputs": [{**good["outputs"][0], "datatype": "FP32", "data": [0.5] * len(labels)}]})
            elif fault == "nan":
                self.send(200, b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [NaN, 1]}]}')
            elif fault == "400":
                self.send(400, {"error": "bad input"})
            elif fault == "limit":  # a spent quota: no Retry-After, nothing to wait for
                self.send(429, {"error": "quota spent"})
            elif fault == "huge":
                self.send(200, {**good, "padding": "x" * 100_000})
            elif fault == "probs":  # answers probabilities where the metadata promised labels
                probs = [v for label in labels for v in ((0.2, 0.8) if label else (0.9, 0.1))]
                self.send(
                    200, {"outputs": [{"name": "y", "datatype": "FP32", "shape": [len(labels), 2], "data": probs}]}
                )
            else:
                self.send(200, good)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def independent():
    script = Script()
    server = stdlib_server(script)
    yield f"http://127.0.0.1:{server.server_address[1]}", script
    server.shutdown()


def remote(url, **kw):
    return RemoteModel(url, "m", "labels", backoff=0.01, timeout=1.5, **kw)  # well under "slow", well over a reply


def test_client_reads_metadata_and_labels_from_an_independent_server(independent):
    url, script = independent
    m = remote(url, batch_size=4)
    assert m.input_shape == (3,)
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m.labels(x), (x.sum(1) > 0).long())
    assert m.queries == 10 and script.infer_requests == 3  # batches of 4, 4, 2
    assert m.labels(torch.empty(0, 3)).shape == (0,) and script.infer_requests == 3  # nothing to send
    assert len(set(script.ids)) == 3


def test_retries_count_each_query_once(independent):
    url, script = independent
    m = remote(url)
    script.faults = ["503", "429", "slow"]
    x = torch.randn(5, 3)
    assert torch.equal(m.labels(x), (x.sum(1) > 0).long())
    assert m.queries == 5 and script.infer_requests == 4 and m.requests == 4 + 2  # + health and metadata


@pytest.mark.parametrize(
    ("fault", "message"),
    [("html", "not JSON"), ("shape", "carries"), ("float", "integer datatype"), ("400", "HTTP 400")],
)
def test_malformed_answers_are_clear_errors(independent, fault, message):
    url, script = independent
    m = remote(url)
    script.faults = [fault]
    with pytest.raises(RemoteError, match=message):
        m.labels(torch.randn(2, 3))
    assert m.queries == 0  # an answer that failed validation is not a query answered


def test_spent_limits_oversized_answers_and_probabilities_for_labels(independent):
    url, script = independent
    m = remote(url, max_response=50_000)
    script.faults = ["limit"]
    with pytest.raises(RemoteError, match="HTTP 429.*quota spent"):
        m.labels(torch.randn(2, 3))
    assert script.infer_requests == 1  # a spent limit is not retried
    script.faults = ["huge"]
    with pytest.raises(RemoteError, match="exceeds 50000"):
        m.labels(torch.randn(2, 3))
    script.faults = ["probs"]
    x = torch.randn(6, 3)
    assert torch.equal(m.labels(x), (x.sum(1) > 0).long())  # read through the argmax


def test_nan_probabilities_are_refused(independent):
    url, script = independent
    m = RemoteModel(url, "m", "probs", backoff=0.01, num_classes=2)
    script.faults = ["nan"]
    with pytest.raises(RemoteError, match="NaN"):
        m.probs(torch.randn(1, 3))


def test_persistent_failure_gives_up_after_the_retries(independent):
    url, script = independent
    m = remote(url, retries=2)
    script.faults = ["503"] * 3
    with pytest.raises(RemoteError, match="after 3 attempts.*503"):
        m.labels(torch.randn(1, 3))
    script.faults = ["slow"] * 3
    with pytest.raises(RemoteError, match="ReadTimeout"):
        m.labels(torch.randn(1, 3))


def test_budget_is_checked_before_sending(independent):
    url, script = independent
    m = remote(url, budget=8)
    m.labels(torch.randn(6, 3))
    sent = script.infer_requests
    with pytest.raises(BudgetExceededError):
        m.labels(torch.randn(3, 3))
    assert script.infer_requests == sent and m.queries == 6


def test_unreachable_and_wrong_servers(independent):
    with pytest.raises(RemoteError, match="ConnectError"):
        RemoteModel(f"http://127.0.0.1:{free_port()}", "m", retries=1, backoff=0.01)
    with pytest.raises(RemoteError, match="HTTP 404"):
        RemoteModel(independent[0], "other", retries=0)
    with pytest.raises(ConfigError):
        RemoteModel(independent[0], "m", "logits")  # type: ignore[arg-type]


def test_own_server_answers_like_the_model(served):
    url, owner = served
    x = data.load("digits", "test").x[:70].float()
    with RemoteModel(f"{url}/labels", "owner") as labels, RemoteModel(f"{url}/probs", "owner", "probs") as probs:
        assert labels.input_shape == (1, 8, 8) and probs.num_classes == 10
        assert torch.equal(labels.labels(x), owner.labels(x))
        torch.testing.assert_close(probs.probs(x), owner.probs(x), atol=1e-6, rtol=1e-5)


def test_own_server_validates_requests_limits_clients_and_logs(served, caplog):
    import httpx

    url, _ = served
    infer = f"{url}/labels/v2/models/owner/infer"

    def body(n, shape=(1, 8, 8), **kw):
        return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, *shape], "data": [0.0] * n * 64}], **kw}

    assert httpx.post(infer, json=body(2, (8, 8))).json()["error"].startswith("input shape must be")
    assert httpx.post(infer, content=b"{nope").status_code == 400
    assert httpx.post(f"{url}/labels/v2/models/nobody/infer", json=body(1)).status_code == 404
    huge = httpx.post(infer, content=b"[" + b"0," * 2_000_000 + b"0]")
    assert huge.status_code == 413  # refused unread: larger than any valid request
    keyed = f"{url}/keyed/v2/models/owner/infer"
    assert httpx.post(keyed, json=body(1)).status_code == 401
    assert httpx.post(keyed, json=body(1), headers=bearer("mallory-0123456789abcdef")).status_code == 401
    assert httpx.get(f"{url}/keyed/v2/models/owner").status_code == 401
    with caplog.at_level(logging.INFO, logger="modelprint.serve"):
        first = httpx.post(keyed, json=body(3, id="r1"), headers=bearer("alice-0123456789abcdef"))
        again = httpx.post(keyed, json=body(3, id="r1"), headers=bearer("alice-0123456789abcdef"))  # not counted
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    logged = json.loads(caplog.records[0].getMessage())
    assert logged["rows"] == 3 and logged["client"] == "alice"
    for _ in range(5):
        assert httpx.post(keyed, json=body(1000), headers=bearer("bob-0123456789abcdef")).status_code == 200
    # bob's limit is spent, whatever he writes in other headers; alice still has hers
    over = httpx.post(keyed, json=body(1), headers={**bearer("bob-0123456789abcdef"), "x-client-id": "carol"})
    assert over.status_code == 429 and "limit of 5000" in over.json()["error"]
    assert httpx.post(keyed, json=body(1), headers=bearer("alice-0123456789abcdef")).status_code == 200
    # without keys the client is the peer address: a made-up header buys no new budget
    anon = f"{url}/anon/v2/models/owner/infer"
    for i in range(5):
        httpx.post(anon, json=body(1000), headers={"x-client-id": f"c{i}"})
    assert httpx.post(anon, json=body(1), headers={"x-client-id": "fresh"}).status_code == 429


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_api_key_files_are_validated(served, tmp_path):
    from modelprint.serve import load_api_keys

    good = tmp_path / "keys"
    good.write_text("# clients\nalice alice-0123456789abcdef\nbob   bob-0123456789abcdef  # the auditor\n")
    assert load_api_keys(good) == KEYS
    twice = "a k-0123456789abcdef\na k-0123456789abcdefg"
    for text, message in (
        ("alice short", "shorter than 16"), ("alice", "expected 'NAME KEY'"), (twice, "twice"), ("# x", "no API keys")
    ):  # fmt: skip
        bad = tmp_path / "bad"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_api_keys(bad)
    url, _ = served
    with RemoteModel(f"{url}/keyed", "owner", api_key="alice-0123456789abcdef") as m:
        assert m.labels(torch.zeros(2, 1, 8, 8)).shape == (2,)


def test_verify_over_http(served, zoo_cache, tmp_path):
    from typer.testing import CliRunner

    from modelprint.cli import app

    url, _ = served
    runner, fp, cache = CliRunner(), tmp_path / "owner.fp", ["--cache", str(zoo_cache)]
    made = runner.invoke(app, ["extract", "train(cnn,digits,0)", "-s", "AKH", "--budget", "40", "-o", str(fp), *cache])
    assert made.exit_code == 0, made.output
    nulls = [x for a in ("lenet", "mlp") for s in (4, 5) for x in ("--null", f"train({a},digits,{s})")]
    assert runner.invoke(app, ["calibrate", str(fp), *nulls, "--fpr", "0.05", *cache]).exit_code == 0
    r = runner.invoke(app, ["verify", str(fp), "--url", f"{url}/labels", "--model-name", "owner", "--json"])
    assert r.exit_code == 0 and '"related": true' in r.output and '"queries": 40' in r.output, r.output
    both = runner.invoke(app, ["verify", str(fp), "train(cnn,digits,0)", "--url", url])
    assert isinstance(both.exception, ConfigError)


def test_backdoor_diff_over_http(served, zoo_cache):
    """A served suspect is searched through its labels; the trusted model is the one it serves, so no trigger."""
    from typer.testing import CliRunner

    from modelprint.cli import app

    url, _ = served
    runner, cache = CliRunner(), ["--cache", str(zoo_cache)]
    quick = ["--detector", "label-search(steps=3,samples=2,inputs=4,checked=8)"]
    r = runner.invoke(app, ["backdoor", "diff", "train(cnn,digits,0)", "--url", f"{url}/open", "--model-name",
                            "owner", *quick, "--json", *cache])  # fmt: skip
    assert r.exit_code == 1, r.output
    v = json.loads(r.output)
    assert v["outcome"] == "clean" and v["queries"] == v["evidence"]["label_queries"] > 480, v
    nc = runner.invoke(app, ["backdoor", "diff", "train(cnn,digits,0)", "--url", url, "--detector", "neural-cleanse"])
    assert isinstance(nc.exception, ConfigError) and "label-search" in str(nc.exception)
    both = runner.invoke(app, ["backdoor", "diff", "train(cnn,digits,0)", "train(cnn,digits,0)", "--url", url])
    assert isinstance(both.exception, ConfigError)


def test_adaptive_suspect_answers_odd_queries_at_random(source):
    from modelprint.adaptive import Adaptive

    owner = WhiteBox(source.module, input_shape=(1, 8, 8))
    test = data.load("digits", "test")
    defended = Adaptive(owner, data.load("digits", "train").x, fpr=0.05)
    genuine = defended.suspicious(test.x.float()).float().mean()
    noise = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert genuine < 0.15 and defended.suspicious(noise).float().mean() > 0.9
    agree = (defended.labels(noise) == owner.labels(noise)).float().mean()
    assert agree < 0.4  # about 1/10 by chance, plus the few noise inputs that pass
    accuracy = (defended.labels(test.x.float()) == test.y).float().mean()
    assert accuracy > (owner.labels(test.x.float()) == test.y).float().mean() - 0.15
    probs = Adaptive(owner, data.load("digits", "train").x).probs(noise)
    torch.testing.assert_close(probs.sum(1), torch.ones(200))
    assert defended.queries == 200 + 450 and owner.queries >= defended.queries


def test_serve_command(zoo_cache, source):
    import subprocess
    import sys

    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "modelprint.cli", "serve", "train(cnn,digits,0)", "--cache", str(zoo_cache),
           "--port", str(port), "--name", "victim", "--adaptive", "digits"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        x = data.load("digits", "test").x[:20].float()
        with RemoteModel(f"http://127.0.0.1:{port}", "victim") as m:
            agree = (m.labels(x) == WhiteBox(source.module, input_shape=(1, 8, 8)).labels(x)).float().mean()
        assert agree >= 0.8  # genuine digits pass the defence (about 5% are answered at random)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert '"model": "victim"' in err and '"rows": 20' in err, err
