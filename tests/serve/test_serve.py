"""`deepar-cli serve`: the real endpoint (2 workers) on a free loopback port.

One tiny model (with a `cat` feature, so a wrong `cat` count can be refused) and one server
(read timeout 2 s) serve the module; the shutdown, timeout and overload tests start their
own. Hostile clients speak raw HTTP over a socket. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

from deepar_cli.cli import main
from helpers import HTTP_TIMEOUT_S, JSON_TYPE, Server, session

PREDICTION_LENGTH = 24
NUM_CAT = 2
# JSON Lines requests take their configuration from the environment, as in SageMaker.
LINES_CONFIG = {"num_samples": 30, "output_types": ["mean", "quantiles", "samples"],
                "quantiles": ["0.1", "0.5", "0.9"]}
LINES_TYPE = "application/jsonlines"
READ_TIMEOUT_S = 2  # the module server's --read-timeout


def cli(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepar_cli", *args], capture_output=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A model trained in a second on 6 sine series with one `cat` (2 groups)."""
    from deepar_cli.data.channels import write_records
    from deepar_cli.data.synthetic import SyntheticSpec, generate

    folder = tmp_path_factory.mktemp("serve")
    train, test = generate(SyntheticSpec(num_series=6, length=120,
                                         prediction_length=PREDICTION_LENGTH,
                                         num_categories=NUM_CAT))
    write_records(folder / "train.json", train)
    done = cli("train", "--train", str(folder / "train.json"), "--time_freq", "H",
               "--context_length", "48", "--prediction_length", str(PREDICTION_LENGTH),
               "--epochs", "2", "--mini_batch_size", "8", "--num_cells", "10",
               "--num_layers", "1", "--model-dir", str(folder / "model"), "--quiet")
    assert done.returncode == 0, done.stderr.decode()
    instances = [{"start": r.start, "target": r.target.tolist(), "cat": list(r.cat)}
                 for r in train[:5]]
    return SimpleNamespace(dir=folder / "model", folder=folder, instances=instances)


@pytest.fixture(scope="module")
def server(model: SimpleNamespace) -> Iterator[Server]:
    endpoint = Server(model.dir, model.folder / "serve.log",
                      env={"DEEPAR_INFERENCE_CONFIG": json.dumps(LINES_CONFIG)},
                      options=["--read-timeout", str(READ_TIMEOUT_S)])
    try:
        endpoint.wait_ready()
        yield endpoint
    finally:
        endpoint.stop()
    log = endpoint.text()
    # Bad requests are the client's problem: no server error and no traceback, ever.
    assert "Traceback" not in log and "unexpected error" not in log, log
    assert "overran the timeout" not in log and "died" not in log, log


def request(model: SimpleNamespace, **configuration: Any) -> Dict[str, Any]:
    body: Dict[str, Any] = {"instances": model.instances}
    if configuration:
        body["configuration"] = configuration
    return body


def jsonlines(records: List[Dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def parse_lines(text: bytes) -> List[Dict[str, Any]]:
    assert text.endswith(b"\n")
    return [json.loads(line) for line in text.splitlines()]


# --- answers --------------------------------------------------------------------------


def test_ping(server: Server) -> None:
    answer = server.http.get(server.url + "/ping", timeout=HTTP_TIMEOUT_S)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}
    assert server.http.head(server.url + "/ping", timeout=HTTP_TIMEOUT_S).status_code == 200


def test_execution_parameters(server: Server) -> None:
    answer = server.http.get(server.url + "/execution-parameters", timeout=HTTP_TIMEOUT_S)
    assert answer.status_code == 200
    assert answer.json() == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD",
                             "MaxPayloadInMB": 6}


OUTPUT_TYPE_SETS = [["mean"], ["quantiles"], ["samples"], ["mean", "quantiles"],
                    ["mean", "samples"], ["quantiles", "samples"],
                    ["samples", "quantiles", "mean"]]


@pytest.mark.parametrize("output_types", OUTPUT_TYPE_SETS, ids="+".join)
def test_output_types(server: Server, model: SimpleNamespace, output_types: List[str]) -> None:
    answer = server.post(request(model, num_samples=20, output_types=output_types,
                                 quantiles=["0.1", "0.5", "0.9"]))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == JSON_TYPE
    predictions = answer.json()["predictions"]
    assert len(predictions) == len(model.instances)
    for prediction in predictions:
        assert list(prediction) == output_types
        if "mean" in prediction:
            assert len(prediction["mean"]) == PREDICTION_LENGTH
        if "quantiles" in prediction:
            assert list(prediction["quantiles"]) == ["0.1", "0.5", "0.9"]
            low, mid, high = prediction["quantiles"].values()
            assert all(len(q) == PREDICTION_LENGTH for q in (low, mid, high))
            assert all(a <= b <= c for a, b, c in zip(low, mid, high))
        if "samples" in prediction:
            assert len(prediction["samples"]) == 20
            assert all(len(path) == PREDICTION_LENGTH for path in prediction["samples"])


def test_default_configuration(server: Server, model: SimpleNamespace) -> None:
    """No `configuration`: SageMaker's defaults, mean and the nine deciles."""
    answer = server.post(request(model))
    assert answer.status_code == 200, answer.text
    for prediction in answer.json()["predictions"]:
        assert list(prediction) == ["mean", "quantiles"]
        assert list(prediction["quantiles"]) == [f"0.{i}" for i in range(1, 10)]


def test_json_lines(server: Server, model: SimpleNamespace) -> None:
    """JSON Lines in, JSON Lines out (configuration from DEEPAR_INFERENCE_CONFIG); the
    same forecasts as the equivalent JSON request, in either format."""
    lines = server.post(jsonlines(model.instances), LINES_TYPE)
    assert lines.status_code == 200, lines.text
    assert lines.headers["Content-Type"] == LINES_TYPE
    predictions = parse_lines(lines.content)
    assert len(predictions) == len(model.instances)
    assert all(list(p) == LINES_CONFIG["output_types"] for p in predictions)
    assert all(len(p["samples"]) == LINES_CONFIG["num_samples"] for p in predictions)

    as_json = server.post(jsonlines(model.instances), LINES_TYPE,
                          headers={"Accept": JSON_TYPE})
    direct = server.post(request(model, **LINES_CONFIG))
    assert as_json.headers["Content-Type"] == JSON_TYPE
    assert as_json.content == direct.content
    converted = server.post(request(model, **LINES_CONFIG), headers={"Accept": LINES_TYPE})
    assert converted.headers["Content-Type"] == LINES_TYPE
    assert converted.content == lines.content


@pytest.mark.parametrize("accept, expected", [
    ("*/*", JSON_TYPE), ("application/*", JSON_TYPE), ("application/json", JSON_TYPE),
    ("application/jsonlines", LINES_TYPE), ("application/x-jsonlines", LINES_TYPE),
    ("text/csv, application/jsonlines;q=0.5", LINES_TYPE),
    ("application/json;q=0.2, application/jsonlines;q=0.9", LINES_TYPE),
])
def test_accept(server: Server, model: SimpleNamespace, accept: str, expected: str) -> None:
    answer = server.post(request(model, num_samples=5, output_types=["mean"]),
                         headers={"Accept": accept})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == expected
    predictions = (answer.json()["predictions"] if expected == JSON_TYPE
                   else parse_lines(answer.content))
    assert len(predictions) == len(model.instances)


def test_same_bytes_as_predict(server: Server, model: SimpleNamespace, tmp_path: Path) -> None:
    """`predict` and `serve` answer through one path: same request and seed, same bytes."""
    body = json.dumps(request(model, num_samples=50, output_types=["mean", "quantiles",
                                                                   "samples"]))
    (tmp_path / "request.json").write_text(body)
    (tmp_path / "records.jsonl").write_bytes(jsonlines(model.instances))
    env = {**os.environ, "DEEPAR_INFERENCE_CONFIG": json.dumps(LINES_CONFIG)}
    runs = [subprocess.Popen([sys.executable, "-m", "deepar_cli", "predict", "--model-dir",
                              str(model.dir), "--input", str(tmp_path / name), "--output",
                              str(tmp_path / f"{name}.out"), "--seed", "42"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name in ("request.json", "records.jsonl")]
    # Meanwhile, the endpoint (after other requests, so a worker's history must not matter).
    answer = server.post(body)
    lines = server.post(jsonlines(model.instances), LINES_TYPE)
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode()
    assert answer.status_code == lines.status_code == 200
    assert answer.content == (tmp_path / "request.json.out").read_bytes()
    assert lines.content == (tmp_path / "records.jsonl.out").read_bytes()


def test_concurrent_clients(server: Server, model: SimpleNamespace) -> None:
    """8 clients x 3 requests over 2 workers: every answer is the sequential one."""
    bodies = [json.dumps(request(model, num_samples=n, output_types=["mean", "quantiles"]))
              for n in (10, 20, 40)]
    expected = [server.post(body).content for body in bodies]
    assert len(set(expected)) == 3

    def client(index: int) -> List[bytes]:
        http = session()
        try:
            answers = []
            for body in bodies[index % 3:] + bodies[:index % 3]:
                answer = http.post(server.url + "/invocations", data=body,
                                   headers={"Content-Type": JSON_TYPE}, timeout=HTTP_TIMEOUT_S)
                assert answer.status_code == 200, answer.text
                answers.append(answer.content)
            return answers[3 - index % 3:] + answers[:3 - index % 3]
        finally:
            http.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(client, range(8), timeout=120))
    assert all(result == expected for result in results)


def test_master_never_loads_mxnet(server: Server) -> None:
    """MXNet is not fork-safe once used: only the forked workers may map it."""
    maps = Path(f"/proc/{server.proc.pid}/maps")
    if not maps.exists():
        pytest.skip("needs Linux /proc")
    assert "libmxnet" not in maps.read_text()
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    workers = children.read_text().split() if children.exists() else []
    assert len(workers) == 2
    assert all("libmxnet" in Path(f"/proc/{pid}/maps").read_text() for pid in workers)


# --- refusals -------------------------------------------------------------------------

RECORD = {"start": "2016-01-01 00:00:00", "target": [1.0, 2.0, 3.0], "cat": [0]}


def bad(body: Any = None, *, config: Any = None, content_type: str = JSON_TYPE) -> Any:
    if body is None:
        body = {"instances": [RECORD]}
        if config is not None:
            body["configuration"] = config
    return body, content_type


BAD_REQUESTS = {
    "empty body": (bad(b""), 400, "the request body is empty"),
    "not an object": (bad([RECORD]), 400, "the request must be a JSON object, got "
                                          '[{"start":"2016-01-01 00:00:00","targ...'),
    "no instances": (bad({"configuration": {}}), 400, 'the request has no "instances" field'),
    "empty instances": (bad({"instances": []}), 400,
                        '"instances" must be a non-empty list of records, got []'),
    "non-numeric target": (bad({"instances": [{**RECORD, "target": [1, "x"]}]}), 400,
                           'instances[0]: "target" must be a list of numbers, got "x" at '
                           "position 1"),
    "no start": (bad({"instances": [RECORD, {"target": [1]}]}), 400,
                 'instances[1]: "start" is missing'),
    "wrong cat count": (bad({"instances": [{**RECORD, "cat": [0, 1]}]}), 400,
                        'instances[0]: "cat" has 2 values, the model expects 1'),
    "no cat": (bad({"instances": [{"start": "2016-01-01", "target": [1]}]}), 400,
               'instances[0]: "cat" is missing; the model was trained with 1 categorical '
               "feature(s)"),
    "unseen cat": (bad({"instances": [{**RECORD, "cat": [7]}]}), 400,
                   'instances[0]: "cat" value 7 at position 0 was never seen in training '
                   "(categories 0..1)"),
    "overflowing target": (bad({"instances": [{**RECORD, "target": [1, 1e300]}]}), 400,
                           'instances[0]: "target" value 1e+300 at position 1 is beyond '
                           "+/-1e+30, the largest magnitude DeepAR handles"),
    "unknown output type": (bad(config={"output_types": ["mean", "median"]}), 400,
                            'unknown output type "median" in "output_types"; valid: "mean", '
                            '"quantiles", "samples"'),
    "quantile above 1": (bad(config={"quantiles": ["0.5", "1.5"]}), 400,
                         'quantile "1.5" in "quantiles" is not a number in (0, 1)'),
    "quantile 0": (bad(config={"quantiles": ["0"]}), 400,
                   'quantile "0" in "quantiles" is not a number in (0, 1)'),
    "quantile not a number": (bad(config={"quantiles": ["p50"]}), 400,
                              'quantile "p50" in "quantiles" is not a number in (0, 1)'),
    "num_samples 0": (bad(config={"num_samples": 0}), 400,
                      '"num_samples" must be an integer in [1, 10000], got 0'),
    "num_samples negative": (bad(config={"num_samples": -5}), 400,
                             '"num_samples" must be an integer in [1, 10000], got -5'),
    "num_samples huge": (bad(config={"num_samples": 10_000_000}), 400,
                         '"num_samples" must be an integer in [1, 10000], got 10000000'),
    "unknown configuration field": (bad(config={"samples": 5}), 400,
                                    '"configuration" has an unknown field "samples"; valid: '
                                    "num_samples, output_types, quantiles"),
    "json lines record": (bad(jsonlines([RECORD, {**RECORD, "target": []}]),
                              content_type=LINES_TYPE), 400,
                          'line:2: "target" must not be empty'),
    "json lines cat": (bad(jsonlines([RECORD, RECORD, {**RECORD, "cat": []}]),
                           content_type=LINES_TYPE), 400,
                       'line:3: "cat" has 0 values, the model expects 1'),
    "wrong content type": (bad(b"1,2,3", content_type="text/csv"), 415,
                           "unsupported Content-Type 'text/csv'; send application/json (an "
                           "endpoint request) or application/jsonlines (one record a line)"),
    "form content type": (bad(b"a=1", content_type="application/x-www-form-urlencoded"), 415,
                          "unsupported Content-Type 'application/x-www-form-urlencoded'; send "
                          "application/json (an endpoint request) or application/jsonlines "
                          "(one record a line)"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request(server: Server, case: str) -> None:
    (body, content_type), status, message = BAD_REQUESTS[case]
    answer = server.post(body, content_type)
    assert (answer.status_code, answer.json()) == (status, {"error": message})
    assert answer.headers["Content-Type"] == JSON_TYPE


@pytest.mark.parametrize("content_type, body, prefix", [
    (JSON_TYPE, b'{"instances": [', "request body is not valid JSON ("),
    (JSON_TYPE, b"nope", "request body is not valid JSON ("),
    (LINES_TYPE, b'{"start": "2016-01-01", "target": [1]}\n{oops}\n', "line:2: not valid "
                                                                       "JSON ("),
])
def test_not_json(server: Server, body: bytes, content_type: str, prefix: str) -> None:
    """The parser's own words follow the prefix (they depend on orjson's version)."""
    answer = server.post(body, content_type)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(prefix)
    assert "Traceback" not in answer.text


def test_not_acceptable(server: Server, model: SimpleNamespace) -> None:
    answer = server.post(request(model), headers={"Accept": "text/csv"})
    assert (answer.status_code, answer.json()) == (406, {
        "error": "cannot answer in 'text/csv'; the endpoint answers application/json or "
                 "application/jsonlines"})


def big_body() -> bytes:
    record = json.dumps({**RECORD, "target": list(range(100))}).encode()
    count = 6 * 1024 * 1024 // len(record) + 10
    return b'{"instances": [' + b", ".join([record] * count) + b"]}"


TOO_LARGE = ("the request body is larger than the endpoint's limit of 6 MB; send fewer "
             "instances per request")


def test_body_over_limit(server: Server) -> None:
    body = big_body()
    assert len(body) > 6 * 1024 * 1024
    answer = server.post(body)
    assert (answer.status_code, answer.json()) == (413, {"error": TOO_LARGE})


def test_chunked_body_over_limit(server: Server) -> None:
    """No Content-Length up front (chunked upload): refused once past the limit."""
    body = big_body()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]

    answer = server.post(chunks())
    assert (answer.status_code, answer.json()) == (413, {"error": TOO_LARGE})


def test_unknown_path_and_wrong_method(server: Server) -> None:
    http, url = server.http, server.url
    answer = http.get(url + "/predict", timeout=HTTP_TIMEOUT_S)
    assert (answer.status_code, answer.json()) == (404, {
        "error": "no such path '/predict'; the endpoint serves GET /ping and POST /invocations"})
    answer = http.get(url + "/invocations", timeout=HTTP_TIMEOUT_S)
    assert (answer.status_code, answer.json()) == (405, {
        "error": "GET is not allowed on /invocations; use POST"})
    assert answer.headers["Allow"] == "POST"
    answer = http.post(url + "/ping", data=b"{}", timeout=HTTP_TIMEOUT_S)
    assert (answer.status_code, answer.json()) == (405, {
        "error": "POST is not allowed on /ping; use GET or HEAD"})
    assert answer.headers["Allow"] == "GET, HEAD"


def test_still_serving_after_refusals(server: Server, model: SimpleNamespace) -> None:
    for _ in range(3):  # more requests than workers: every worker is still up
        assert server.http.get(server.url + "/ping", timeout=HTTP_TIMEOUT_S).status_code == 200
        assert server.post(request(model, num_samples=5)).status_code == 200


def test_unexpected_error_is_a_json_500(caplog: pytest.LogCaptureFixture) -> None:
    """A bug (here: a broken model object) is logged with its traceback and answered 500
    with a JSON body that holds none (what a worker sends back for the request)."""
    from deepar_cli.serve.server import Settings
    from deepar_cli.serve.worker import answer

    body = json.dumps({"instances": [RECORD]}).encode()
    with caplog.at_level("ERROR", logger="deepar_cli.serve"):
        reply = answer(object(), Settings(model_dir=Path("unused")), JSON_TYPE, JSON_TYPE, body)
    assert (reply.status, reply.content_type) == (500, JSON_TYPE)
    assert json.loads(reply.body) == {
        "error": "internal server error (the server log has the details)"}
    assert "Traceback" in caplog.text and "AttributeError" in caplog.text


# --- slow and hostile clients (raw HTTP on a socket) ----------------------------------


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=HTTP_TIMEOUT_S)


def read_answer(sock: socket.socket) -> SimpleNamespace:
    """One HTTP answer from the socket: status, headers (lower-case names), JSON body, and
    whether the server closed the connection after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-answer"
        body += chunk
    closed = sock.recv(1) == b""
    return SimpleNamespace(status=int(lines[0].split()[1]), headers=headers,
                           json=json.loads(body), closed=closed)


def exchange(server: Server, data: bytes) -> SimpleNamespace:
    with connect(server) as sock:
        sock.sendall(data)
        return read_answer(sock)


def head(method: str = "POST", path: str = "/invocations", **fields: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
             "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


READ_TIMEOUT = {"error": f"the request did not arrive within the server's read timeout of "
                         f"{READ_TIMEOUT_S} s"}


def test_slow_client_gets_408(server: Server, model: SimpleNamespace) -> None:
    """Headers, or a body, not in within --read-timeout: 408 and the connection closed;
    meanwhile the endpoint answers everyone else."""
    half_head, half_body = connect(server), connect(server)
    try:
        started = time.monotonic()
        half_head.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        half_body.sendall(head(Content_Length="1000") + b'{"instances": [')
        assert server.post(request(model, num_samples=5)).status_code == 200
        assert server.http.get(server.url + "/ping", timeout=HTTP_TIMEOUT_S).status_code == 200
        for sock in (half_head, half_body):
            answer = read_answer(sock)
            assert (answer.status, answer.json, answer.closed) == (408, READ_TIMEOUT, True)
        assert READ_TIMEOUT_S <= time.monotonic() - started < READ_TIMEOUT_S + 5
    finally:
        half_head.close()
        half_body.close()
    assert server.post(request(model, num_samples=5)).status_code == 200


def test_slow_clients_do_not_delay_ping(server: Server, model: SimpleNamespace) -> None:
    """Twice as many clients as workers, each stuck mid-body: /ping answers at once, and so
    does a forecast (a slow client costs a connection, not a worker)."""
    slow = [connect(server) for _ in range(4)]
    try:
        for sock in slow:
            sock.sendall(head(Content_Length="100000") + b"{")
        time.sleep(0.2)
        seconds = []
        for _ in range(10):
            started = time.monotonic()
            answer = server.http.get(server.url + "/ping", timeout=HTTP_TIMEOUT_S)
            seconds.append(time.monotonic() - started)
            assert answer.status_code == 200
        assert max(seconds) < 0.5, seconds
        assert server.post(request(model, num_samples=5)).status_code == 200
    finally:
        for sock in slow:
            sock.close()


def test_content_length_over_limit_without_the_body(server: Server) -> None:
    """Headers alone announcing 7 MB: 413 at once, before any byte of the body."""
    with connect(server) as sock:
        sock.settimeout(5)
        sock.sendall(head(Content_Length=str(7 * 1024 * 1024)))
        answer = read_answer(sock)
    assert (answer.status, answer.json, answer.closed) == (413, {"error": TOO_LARGE}, True)
    assert answer.headers["connection"] == "close"


def test_expect_100_continue_over_limit(server: Server) -> None:
    """A client that waits for 100 Continue before its body gets the 413 instead."""
    answer = exchange(server, head(Content_Length=str(7 * 1024 * 1024),
                                   Expect="100-continue"))
    assert (answer.status, answer.json) == (413, {"error": TOO_LARGE})


@pytest.mark.parametrize("data, status, message", [
    (head(Transfer_Encoding="chunked") + b"zz\r\n{}\r\n0\r\n\r\n", 400,
     "malformed chunked request body"),
    (head(Transfer_Encoding="chunked") + b"2\r\n{}XX", 400, "malformed chunked request body"),
    (b"GARBAGE\r\n\r\n", 400, "malformed HTTP request line or headers"),
    (b"GET /ping HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400,
     "malformed HTTP request line or headers"),
    (head(**{f"X_{i}": "1" for i in range(150)}), 431,
     "the request has more than 100 header fields"),
    (head(X_Big="x" * 20_000), 431,
     "the request line and headers are larger than the server's limit of 16 KB"),
], ids=["chunk size", "chunk end", "request line", "header line", "header count",
        "header size"])
def test_malformed_requests(server: Server, data: bytes, status: int, message: str) -> None:
    answer = exchange(server, data)
    assert (answer.status, answer.json, answer.closed) == (status, {"error": message}, True)


PING = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
CHUNKED_BODY = b"2\r\n{}\r\n0\r\n\r\n"
POST_LINE = (b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             b"Content-Type: application/json\r\n")
BOTH_LENGTHS = ("the request has both Content-Length and Transfer-Encoding, so where its body "
                "ends is ambiguous; send one of them")
MALFORMED_HEAD = "malformed HTTP request line or headers"


def answers_until_closed(sock: socket.socket) -> List[SimpleNamespace]:
    """Every HTTP answer the server sends before it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        answers.append(SimpleNamespace(status=int(lines[0].split()[1]), headers=headers,
                                       json=json.loads(rest[:length])))
        data = rest[length:]
    return answers


@pytest.mark.parametrize("data, message", [
    (head(Content_Length="5", Transfer_Encoding="chunked") + CHUNKED_BODY, BOTH_LENGTHS),
    (head(Transfer_Encoding="chunked", Content_Length="5") + CHUNKED_BODY, BOTH_LENGTHS),
    (POST_LINE + b"Content-Length: 2\r\nContent-Length: 7\r\n\r\n{}GET /p", MALFORMED_HEAD),
    (POST_LINE + b"Content-Length: 2, 7\r\n\r\n{}GET /p", MALFORMED_HEAD),
    (POST_LINE + b"Content-Length: +2\r\n\r\n{}", MALFORMED_HEAD),
    (POST_LINE.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Transfer-Encoding: chunked\r\n\r\n"
     + CHUNKED_BODY, "Transfer-Encoding is not allowed in an HTTP/1.0 request; send "
                     "Content-Length"),
], ids=["length then chunked", "chunked then length", "two lengths", "length list",
        "signed length", "HTTP/1.0 chunked"])
def test_ambiguous_framing_closes(server: Server, data: bytes, message: str) -> None:
    """A request whose end is ambiguous (RFC 9112 6.3): one 400, Connection: close, and
    the pipelined request after it is never answered (behind a proxy that framed the
    request differently, it would be a smuggled one)."""
    with connect(server) as sock:
        sock.sendall(data + PING)
        answers = answers_until_closed(sock)
    assert [(a.status, a.json, a.headers["connection"]) for a in answers] == [
        (400, {"error": message}, "close")]


def test_keep_alive(server: Server) -> None:
    """Several requests on one connection, pipelined: answered in turn, none dropped."""
    with connect(server) as sock:
        sock.sendall(PING * 3)
        data = b""
        while data.count(b'{"status":"ok"}') < 3:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 3


@pytest.fixture(scope="module")
def tight(model: SimpleNamespace) -> Iterator[Server]:
    """One worker, room for 1 queued request, 4 connections, 1 MB of bodies in memory, and
    2 s for a forecast."""
    endpoint = Server(model.dir, model.folder / "tight.log", workers=1,
                      options=["--max-queue", "1", "--max-connections", "4", "--timeout", "2",
                               "--max-buffer-mb", "1"])
    try:
        endpoint.wait_ready()
        yield endpoint
    finally:
        endpoint.stop()


def overloaded(what: str) -> Dict[str, str]:
    return {"error": f"the server is at its limit of {what}; retry shortly"}


def test_connection_ceiling(tight: Server) -> None:
    tight.http.close()  # its keep-alive connection would count
    time.sleep(0.3)
    idle = [connect(tight) for _ in range(4)]
    try:
        time.sleep(0.3)  # accepted by now
        started = time.monotonic()
        answer = exchange(tight, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert time.monotonic() - started < 2
        assert (answer.status, answer.json) == (503, overloaded("4 connections"))
        assert answer.headers["retry-after"] == "1"
    finally:
        for sock in idle:
            sock.close()


def test_queue_ceiling(tight: Server, model: SimpleNamespace) -> None:
    """The worker busy and the queue full: the next request gets 503 at once. The busy
    request overruns --timeout (so the test's length does not depend on the machine's
    speed), and the queued one waits past it while the worker is replaced: 504 for both."""
    def post(copies: int, num_samples: int) -> int:
        body = request(model, num_samples=num_samples)
        body["instances"] = body["instances"] * copies  # a new list: model.instances is shared
        http = session()
        try:
            return http.post(tight.url + "/invocations", timeout=120, data=json.dumps(body),
                             headers={"Content-Type": JSON_TYPE}).status_code
        finally:
            http.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        busy = pool.submit(post, 20, 10_000)  # 20 times the work that took about 2 s
        time.sleep(0.5)  # in the worker's hands
        queued = pool.submit(post, 1, 5)
        time.sleep(0.3)  # in the queue
        started = time.monotonic()
        answer = exchange(tight, head(Content_Length="2"))  # refused before its body
        assert time.monotonic() - started < 1
        assert (answer.status, answer.json, answer.closed) == (
            503, overloaded("1 queued requests"), True)
        assert answer.headers["retry-after"] == "1"
        assert (busy.result(timeout=150), queued.result(timeout=150)) == (504, 504)


def test_memory_ceiling(tight: Server) -> None:
    """Bodies held in memory have a ceiling (here 1 MB): past it 503, before reading."""
    answer = exchange(tight, head(Content_Length=str(2 * 1024 * 1024)))
    assert (answer.status, answer.json) == (503, overloaded("1 MB of request bodies in memory"))


# --- start and stop -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["SIGTERM to the master", "Ctrl-C to the process group"])
def test_shutdown_finishes_request_in_flight(model: SimpleNamespace, how: str) -> None:
    endpoint = Server(model.dir, model.folder / f"stop-{how.split()[0]}.log", new_session=True)
    try:
        endpoint.wait_ready()
        slow = {"instances": model.instances * 2,
                "configuration": {"num_samples": 10_000, "output_types": ["mean"]}}
        result: Dict[str, Any] = {}

        def call() -> None:
            started = time.monotonic()
            result["answer"] = endpoint.post(slow)
            result["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.7)  # the request (about 3 s here) is in a worker's hands by now
        if how.startswith("SIGTERM"):
            endpoint.proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(endpoint.proc.pid, signal.SIGINT)
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert endpoint.proc.wait(timeout=15) == 0, endpoint.text()
        answer = result["answer"]
        assert result["seconds"] > 0.7, "the request did not overlap the shutdown"
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 2 * len(model.instances)
        with pytest.raises(requests.ConnectionError):
            endpoint.http.get(endpoint.url + "/ping", timeout=2)
    finally:
        endpoint.stop()


def test_request_over_timeout(model: SimpleNamespace) -> None:
    """--timeout 3: a request that runs longer is aborted with a JSON 504 and its worker
    killed and replaced; the endpoint goes on serving. Loading the model (about 2 s here)
    does not count against the timeout."""
    endpoint = Server(model.dir, model.folder / "timeout.log", options=["--timeout", "3"])
    try:
        endpoint.wait_ready()
        started = time.monotonic()
        # 40 x the tiny instances at 10,000 samples: minutes of work, on any machine
        heavy = {"instances": model.instances * 40,
                 "configuration": {"num_samples": 10_000, "output_types": ["mean"]}}
        answer = endpoint.post(heavy)
        assert time.monotonic() - started < 10
        assert (answer.status_code, answer.json()) == (504, {
            "error": "the request took longer than the server's timeout of 3 s; send fewer "
                     "instances or samples per request"})
        for _ in range(3):
            assert endpoint.post(request(model, num_samples=5)).status_code == 200
        log = endpoint.text()
        assert "504 POST /invocations" in log and "overran the timeout of 3 s" in log
    finally:
        endpoint.stop()
    assert endpoint.proc.returncode == 0


def test_abandoned_requests_are_not_forecast(model: SimpleNamespace) -> None:
    """One worker, busy with a slow request; 4 more as slow, each from a client that hangs
    up at once, then a quick one. Each abandoned one leaves the queue unforecast (the log
    says which fate each had), so the worker forecasts the busy one and the quick one, and
    at most one abandoned one (if it reached the worker before its client's hang-up did)."""
    endpoint = Server(model.dir, model.folder / "abandoned.log", workers=1)
    try:
        endpoint.wait_ready()
        slow = json.dumps({"instances": model.instances,
                           "configuration": {"num_samples": 1_000, "output_types": ["mean"]}})
        with ThreadPoolExecutor(max_workers=1) as pool:
            busy = pool.submit(endpoint.http.post, endpoint.url + "/invocations", data=slow,
                               headers={"Content-Type": JSON_TYPE}, timeout=120)
            time.sleep(0.2)  # queued first
            for _ in range(4):
                with connect(endpoint) as sock:
                    sock.sendall(head(Content_Length=str(len(slow))) + slow.encode())
            quick = session().post(endpoint.url + "/invocations", timeout=120,
                                   data=json.dumps(request(model, num_samples=5)),
                                   headers={"Content-Type": JSON_TYPE})
            assert quick.status_code == 200, quick.text
            assert busy.result(timeout=120).status_code == 200
    finally:
        endpoint.stop()
    log = endpoint.text()
    gone = "the client closed the connection before its answer; "
    unforecast = log.count(gone + "dropped from the queue, unforecast")
    forecast = log.count(gone + "its forecast's answer will be dropped")
    assert (unforecast + forecast, unforecast >= 3) == (4, True), log


@pytest.mark.parametrize("setup, args, env, code, message", [
    (None, ["--model-dir", "{tmp}/nowhere"], {}, 66,
     "Error: {tmp}/nowhere: no such model folder (train one with `deepar-cli train`)"),
    ("empty", ["--model-dir", "{tmp}"], {}, 66,
     "Error: {tmp}: not a deepar-cli model folder (hyperparameters.json is missing)"),
    ("model", ["--model-dir", "{model}"], {"DEEPAR_INFERENCE_CONFIG": "{num_samples: 3}"}, 64,
     "Error: DEEPAR_INFERENCE_CONFIG is not valid JSON (unexpected character, expected a "
     "string key)"),
    ("model", ["--model-dir", "{model}"],
     {"DEEPAR_INFERENCE_CONFIG": '{"num_samples": 0}'}, 64,
     'Error: DEEPAR_INFERENCE_CONFIG: "num_samples" must be an integer in [1, 10000], got 0'),
    ("busy", ["--model-dir", "{model}", "--port", "{port}"], {}, 64,
     "Error: cannot listen on 127.0.0.1:{port} (Address already in use)"),
])
def test_refuses_to_start(model: SimpleNamespace, tmp_path: Path, monkeypatch: Any,
                          setup: Optional[str], args: List[str], env: Dict[str, str],
                          code: int, message: str) -> None:
    """Problems found before any worker is forked: one line, the error's exit code."""
    from click.testing import CliRunner

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        names = {"tmp": str(tmp_path), "model": str(model.dir),
                 "port": str(busy.getsockname()[1])}
        monkeypatch.delenv("DEEPAR_INFERENCE_CONFIG", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        result = CliRunner().invoke(main, ["serve", *(a.format(**names) for a in args)])
        assert (result.exit_code, result.output.strip()) == (code, message.format(**names))
