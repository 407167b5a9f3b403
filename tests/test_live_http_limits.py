"""Real tier: slow and oversized clients against a live server (real uvicorn on 127.0.0.1, the
packaged model on llama.cpp), spoken to over raw sockets; the server keeps serving afterwards."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import LiveServer, start_live_server, stop_live_server

pytestmark = pytest.mark.real

HEADER_TIMEOUT = 1
BODY_TIMEOUT = 1
MAX_BODY = 4096
MAX_HEADERS = 4096
# How long a test waits for the server to answer or close: far beyond the deadlines above, so
# a slow machine cannot fail the test, while a server that never closes does.
PATIENCE = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_live_server(
        tmp_path_factory.mktemp("limits"),
        JARVIS_INFERENCE_ENGINE="llama_cpp",
        JARVIS_CONTEXT_SIZE="1024",
        JARVIS_PARALLEL="1",
        JARVIS_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        JARVIS_BODY_TIMEOUT=str(BODY_TIMEOUT),
        JARVIS_MAX_BODY_BYTES=str(MAX_BODY),
        JARVIS_MAX_HEADER_BYTES=str(MAX_HEADERS),
    )
    yield live
    stop_live_server(live)


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after it

    def error_message(self) -> str:
        return json.loads(self.body)["error"]["message"]


def connect(server: LiveServer) -> socket.socket:
    port = int(server.base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(PATIENCE)
    return sock


def read_until_closed(sock: socket.socket) -> Answer:
    """Everything the server sends until it closes the connection (or PATIENCE runs out)."""
    data, closed = b"", False
    try:
        while chunk := sock.recv(65536):
            data += chunk
        closed = True
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    return parse(data, closed)


def read_one_response(sock: socket.socket) -> Answer:
    """One response framed by Content-Length, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(parse(head + b"\r\n\r\n", False).headers["content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return parse(head + b"\r\n\r\n" + body, False)


def parse(data: bytes, closed: bool) -> Answer:
    if not data:
        return Answer(None, {}, b"", closed)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:]))
    return Answer(int(lines[0].split(" ")[1]), headers, body, closed)


def assert_still_serving(server: LiveServer) -> None:
    assert httpx.get(f"{server.base_url}/health", timeout=PATIENCE).status_code == 200


def test_partial_headers_get_408_and_the_connection_is_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        answer = read_until_closed(sock)
    assert answer.status == 408 and answer.closed
    assert answer.headers["content-type"] == "application/json"
    assert "JARVIS_HEADER_TIMEOUT" in answer.error_message()
    assert_still_serving(server)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server: LiveServer) -> None:
    with connect(server) as sock:
        answer = read_until_closed(sock)
    assert answer.closed and answer.status is None
    assert_still_serving(server)


def test_a_body_that_stops_arriving_gets_408_and_the_connection_is_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 200\r\n\r\n{"messages": [{"role": "user", "content": "hi'
        )
        answer = read_until_closed(sock)
    assert answer.status == 408 and answer.closed
    assert "JARVIS_BODY_TIMEOUT" in answer.error_message()
    assert_still_serving(server)


def test_a_body_trickling_in_byte_by_byte_is_cut_off_too(server: LiveServer) -> None:
    """Each byte comes well within any idle timeout; the body as a whole does not."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /tokenize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        )
        for _ in range(200):
            # Stop as soon as the server has answered: writing to a closed connection could
            # make the kernel drop the answer before it is read.
            if select.select([sock], [], [], BODY_TIMEOUT / 4)[0]:
                break
            sock.sendall(b" ")
        answer = read_until_closed(sock)
    assert answer.status == 408 and answer.closed
    assert_still_serving(server)


def test_a_chunked_body_over_the_limit_gets_413_and_the_connection_is_closed(server: LiveServer) -> None:
    chunk = b"x" * 1000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 2))
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        answer = read_until_closed(sock)
    assert answer.status == 413 and answer.closed
    assert f"at most {MAX_BODY} bytes (JARVIS_MAX_BODY_BYTES)" in answer.error_message()
    assert_still_serving(server)


def test_a_declared_body_over_the_limit_gets_413_before_it_is_sent(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)
        )
        answer = read_until_closed(sock)  # no byte of the body was sent
    assert answer.status == 413 and answer.closed
    assert f"is {MAX_BODY + 1} bytes" in answer.error_message()
    assert_still_serving(server)


@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        (b"GARBAGE\r\n\r\n", 400, "not valid HTTP/1.1"),
        (b"GET /health HTTP/1.1\r\n\r\n", 400, "Host header"),  # HTTP/1.1 without Host
        (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * MAX_HEADERS + b"\r\n\r\n", 431, "JARVIS_MAX_HEADER_BYTES"),
    ],
)
def test_requests_uvicorn_refuses_get_json_error_bodies(server: LiveServer, request_bytes: bytes, status: int, says: str) -> None:
    with connect(server) as sock:
        sock.sendall(request_bytes)
        answer = read_until_closed(sock)
    assert answer.status == status and answer.closed
    assert answer.headers["content-type"] == "application/json"
    assert says in answer.error_message()
    assert_still_serving(server)


def test_a_kept_alive_connection_idle_past_both_deadlines_still_serves(server: LiveServer) -> None:
    """The deadlines cover a request on its way in, not a connection waiting for its next one
    (uvicorn's keep-alive timeout, 5 s here, governs that)."""
    with connect(server) as sock:
        body = json.dumps({"prompt": "hello"}).encode()
        request = (
            b"POST /tokenize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        sock.sendall(request)
        assert read_one_response(sock).status == 200
        time.sleep(max(HEADER_TIMEOUT, BODY_TIMEOUT) * 1.5)
        sock.sendall(request)
        again = read_one_response(sock)
    assert again.status == 200 and json.loads(again.body)["count"] > 0


def test_the_model_still_answers_after_the_hostile_clients(server: LiveServer) -> None:
    response = httpx.post(
        f"{server.api_url}/chat/completions",
        json={"model": "x", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2},
        timeout=PATIENCE,
    )
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] >= 1
