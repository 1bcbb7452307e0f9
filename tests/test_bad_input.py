"""Nothing a client sends may crash an instance: each bad request gets the right status and
OpenAI's envelope, and the server stays healthy."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.openai_spec import validate
from tests.servers import Server

OK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def with_(**changes):
    return json.dumps({**OK, **changes}).encode()


def msg(**fields):
    return json.dumps({**OK, "messages": [fields]}).encode()


# (name, body bytes, status, param, code)
CASES = [
    ("bad json", b'{"model": "gpt-4o",', 400, None, None),
    ("empty body", b"", 400, None, None),
    ("not utf-8", b'{"model": "\xff\xfe"}', 400, None, None),
    ("array instead of object", b"[1, 2]", 400, None, "invalid_type"),
    ("string instead of object", b'"hello"', 400, None, "invalid_type"),
    (
        "missing model",
        json.dumps({"messages": OK["messages"]}).encode(),
        400,
        "model",
        "missing_required_parameter",
    ),
    (
        "missing messages",
        json.dumps({"model": "gpt-4o"}).encode(),
        400,
        "messages",
        "missing_required_parameter",
    ),
    ("model not a string", with_(model=4), 400, "model", "invalid_type"),
    ("messages not an array", with_(messages="hi"), 400, "messages", "invalid_type"),
    ("empty messages", with_(messages=[]), 400, "messages", "empty_array"),
    ("invalid role", msg(role="wizard", content="x"), 400, "messages[0].role", "invalid_value"),
    ("missing role", msg(content="x"), 400, "messages[0].role", "missing_required_parameter"),
    ("content wrong type", msg(role="user", content=42), 400, "messages[0].content", "invalid_type"),
    (
        "content part wrong type",
        msg(role="user", content=[{"type": "text", "text": 1}]),
        400,
        "messages[0].content[0].text",
        "invalid_type",
    ),
    (
        "content part unknown type",
        msg(role="user", content=[{"type": "video"}]),
        400,
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        "tool message without id",
        msg(role="tool", content="x"),
        400,
        "messages[0].tool_call_id",
        "missing_required_parameter",
    ),
    ("message not an object", with_(messages=["hi"]), 400, "messages[0]", "invalid_type"),
    ("n = 0", with_(n=0), 400, "n", "integer_below_min_value"),
    ("n = 1000", with_(n=1000), 400, "n", "integer_above_max_value"),
    ("n as string", with_(n="2"), 400, "n", "invalid_type"),
    ("n as float", with_(n=1.5), 400, "n", "invalid_type"),
    ("negative max_tokens", with_(max_tokens=-1), 400, "max_tokens", "integer_below_min_value"),
    (
        "zero max_completion_tokens",
        with_(max_completion_tokens=0),
        400,
        "max_completion_tokens",
        "integer_below_min_value",
    ),
    ("temperature too high", with_(temperature=3), 400, "temperature", "decimal_above_max_value"),
    ("top_p wrong type", with_(top_p="high"), 400, "top_p", "invalid_type"),
    ("stream not a bool", with_(stream="yes"), 400, "stream", "invalid_type"),
    ("five stop strings", with_(stop=["a", "b", "c", "d", "e"]), 400, "stop", "array_above_max_length"),
    ("stop wrong type", with_(stop=5), 400, "stop", "invalid_type"),
    (
        "stream_options without stream",
        with_(stream_options={"include_usage": True}),
        400,
        "stream_options",
        "invalid_value",
    ),
    ("metadata values not strings", with_(metadata={"a": 1}), 400, "metadata.a", "invalid_type"),
    ("unknown model", with_(model="gpt-17"), 404, None, "model_not_found"),
]


@pytest.mark.parametrize(("name", "body", "status", "param", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_request(
    server: Server, name: str, body: bytes, status: int, param: str | None, code: str | None
) -> None:
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == status, response.text
    payload = response.json()
    validate("ErrorResponse", payload)
    error = payload["error"]
    assert error["param"] == param
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"] and "Traceback" not in error["message"]
    assert response.headers["x-llmsim-instance"] == "sim-test"


def test_oversized_body_is_413(server: Server) -> None:
    big = (
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        + b"x" * (20 * 1024 * 1024)
        + b'"}]}'
    )
    response = httpx.post(f"{server.url}/v1/chat/completions", content=big, timeout=30)
    assert response.status_code == 413
    validate("ErrorResponse", response.json())


def test_oversized_chunked_body_is_413(server: Server) -> None:
    def chunks():
        yield b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * (1024 * 1024)
        yield b'"}]}'

    response = httpx.post(f"{server.url}/v1/chat/completions", content=chunks(), timeout=30)
    assert response.status_code == 413
    validate("ErrorResponse", response.json())


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/chat/completions", 405),
        ("DELETE", "/v1/models", 405),
        ("POST", "/v1/nothing", 404),
        ("GET", "/v2", 404),
    ],
)
def test_wrong_method_and_route(server: Server, method: str, path: str, status: int) -> None:
    response = httpx.request(method, f"{server.url}{path}", timeout=10)
    assert response.status_code == status
    validate("ErrorResponse", response.json())
    assert response.headers["x-llmsim-instance"] == "sim-test"


@pytest.mark.parametrize("path", ["/health", "/", "/v1/models", "/metrics"])
def test_head_answers_where_get_does(server: Server, path: str) -> None:
    """A load balancer's health check may send HEAD: GET's status and headers, no body."""
    got, head = httpx.get(f"{server.url}{path}", timeout=10), httpx.head(f"{server.url}{path}", timeout=10)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["x-llmsim-instance"] == "sim-test"


def test_garbage_on_the_socket_does_not_kill_the_server(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x00\x01\x02 NOT HTTP\r\n\r\n")
        sock.recv(1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        # A truncated body: the client promises more than it sends, then goes away.
        sock.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"mo')


def test_server_still_healthy_after_everything(server: Server) -> None:
    # Named to run last in this module; the bad inputs above must not have hurt the instance.
    response = httpx.post(f"{server.url}/v1/chat/completions", json=OK, timeout=10)
    assert response.status_code == 200
    assert httpx.get(f"{server.url}/health").json()["status"] == "healthy"
    assert server.process.poll() is None
