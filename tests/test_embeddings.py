"""``POST /v1/embeddings`` with the official openai SDK against a real `llmsim serve`: shapes, float and
base64, ``dimensions``, token arrays, determinism across processes, usage, and OpenAI's errors."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
import tiktoken

from tests.openai_spec import validate
from tests.servers import Server, run_server

INSTANCE = "sim-emb"
URL = "/v1/embeddings"


@pytest.fixture(scope="module")
def sim() -> Iterator[Server]:
    with run_server(["--instance-id", INSTANCE, "--api-keys", "sk-emb"]) as server:
        yield server


@pytest.fixture(scope="module")
def client(sim: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-emb", max_retries=0)


def _post(sim: Server, body: dict, key: str = "sk-emb") -> httpx.Response:
    return httpx.post(f"{sim.url}{URL}", json=body, headers={"authorization": f"Bearer {key}"}, timeout=10)


def _raw(sim: Server, body: dict) -> dict:
    response = _post(sim, body)
    assert response.status_code == 200, response.text
    payload = response.json()
    if body.get("encoding_format") != "base64":
        validate("CreateEmbeddingResponse", payload)
    return payload


def test_float_vectors_are_unit_length_and_model_sized(
    client: openai.OpenAI, cl100k: tiktoken.Encoding
) -> None:
    text = "The quick brown fox jumps over the lazy dog — ünïcode 世界"
    for model, size in [
        ("text-embedding-3-small", 1536),
        ("text-embedding-3-large", 3072),
        ("text-embedding-ada-002", 1536),
    ]:
        reply = client.embeddings.create(model=model, input=text, encoding_format="float")
        assert reply.object == "list" and reply.model == model
        (item,) = reply.data
        assert item.object == "embedding" and item.index == 0 and len(item.embedding) == size
        assert np.linalg.norm(item.embedding) == pytest.approx(1.0, abs=1e-5)
        assert reply.usage.prompt_tokens == reply.usage.total_tokens == len(cl100k.encode_ordinary(text))


def test_base64_decoded_by_the_sdk_equals_float(client: openai.OpenAI, sim: Server) -> None:
    text = "same text, two encodings"
    floats = client.embeddings.create(model="text-embedding-3-small", input=text, encoding_format="float")
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    decoded = client.embeddings.create(model="text-embedding-3-small", input=text)
    assert np.allclose(decoded.data[0].embedding, floats.data[0].embedding, atol=1e-7)
    # The wire form: little-endian float32, as OpenAI's.
    payload = _raw(sim, {"model": "text-embedding-3-small", "input": text, "encoding_format": "base64"})
    raw = base64.b64decode(payload["data"][0]["embedding"])
    values = np.frombuffer(raw, dtype="<f4")
    assert len(values) == 1536 and np.allclose(values, floats.data[0].embedding, atol=1e-7)
    assert payload["llmsim_instance"] == INSTANCE  # identity in the body as well as the header


def test_dimensions_shorten_and_renormalise(client: openai.OpenAI) -> None:
    text = "shorten me"
    full = np.array(
        client.embeddings.create(model="text-embedding-3-large", input=text, encoding_format="float")
        .data[0]
        .embedding
    )
    short = client.embeddings.create(
        model="text-embedding-3-large", input=text, dimensions=256, encoding_format="float"
    )
    values = np.array(short.data[0].embedding)
    assert len(values) == 256 and np.linalg.norm(values) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(values, full[:256] / np.linalg.norm(full[:256]), atol=1e-6)  # OpenAI's truncation


def test_lists_and_token_arrays(client: openai.OpenAI, cl100k: tiktoken.Encoding, sim: Server) -> None:
    texts = ["first input", "second input", "first input"]
    reply = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    assert [d.index for d in reply.data] == [0, 1, 2]
    assert reply.data[0].embedding == reply.data[2].embedding != reply.data[1].embedding
    assert reply.usage.prompt_tokens == sum(len(cl100k.encode_ordinary(t)) for t in texts)
    # A token array is the text its tokens spell: the same vector, the same usage.
    ids = cl100k.encode_ordinary("first input")
    one = client.embeddings.create(model="text-embedding-3-small", input=ids, encoding_format="float")
    assert one.data[0].embedding == reply.data[0].embedding and one.usage.prompt_tokens == len(ids)
    many = _raw(
        sim, {"model": "text-embedding-3-small", "input": [ids, cl100k.encode_ordinary("second input")]}
    )
    assert [d["embedding"] for d in many["data"]] == [reply.data[0].embedding, reply.data[1].embedding]


def test_vectors_are_the_same_on_another_process(sim: Server) -> None:
    body = {
        "model": "text-embedding-3-small",
        "input": ["stable across instances", "and runs"],
        "dimensions": 64,
    }
    here = _raw(sim, body)
    with run_server(["--instance-id", "sim-emb-2"]) as other:
        there = httpx.post(f"{other.url}{URL}", json=body, timeout=10).json()
    assert there["llmsim_instance"] == "sim-emb-2"
    assert [d["embedding"] for d in there["data"]] == [d["embedding"] for d in here["data"]]


def test_sdk_exception_classes(client: openai.OpenAI, sim: Server) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="gpt-4o", input="x")
    bad_key = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.embeddings.create(model="text-embedding-3-small", input="x")


INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
)
M = "text-embedding-3-small"

BAD = [
    # (body, status, param, code, message start)
    ({"model": M, "input": ""}, 400, None, None, INVALID_INPUT),
    ({"model": M, "input": ["a", ""]}, 400, None, None, INVALID_INPUT),
    ({"model": M, "input": 5}, 400, "input", "invalid_type", "Invalid type for 'input'"),
    ({"model": M, "input": {"text": "a"}}, 400, "input", "invalid_type", "Invalid type for 'input'"),
    ({"model": M, "input": None}, 400, "input", "invalid_type", "Invalid type for 'input'"),
    ({"model": M, "input": []}, 400, "input", "empty_array", "Invalid 'input': empty array."),
    ({"model": M, "input": [[]]}, 400, None, None, INVALID_INPUT),
    ({"model": M, "input": ["a", 1]}, 400, None, None, INVALID_INPUT),
    ({"model": M, "input": [[1, "a"]]}, 400, None, None, INVALID_INPUT),
    ({"model": M, "input": [True]}, 400, None, None, INVALID_INPUT),
    ({"model": M, "input": [[10**30]]}, 400, None, None, INVALID_INPUT),
    ({"model": M, "input": [[-1]]}, 400, None, None, INVALID_INPUT),
    (
        {"model": M, "input": ["a"] * 2049},
        400,
        "input",
        "array_above_max_length",
        "Invalid 'input': array too long.",
    ),
    (
        {"model": M, "input": "hello " * 8200},
        400,
        None,
        None,
        "Invalid 'input': maximum context length is 8192",
    ),
    ({"model": M, "input": [[1] * 8193]}, 400, None, None, "Invalid 'input': maximum context length is 8192"),
    (
        {"model": M, "input": "x" * 2_000_000},
        400,
        None,
        None,
        "Invalid 'input': maximum context length is 8192",
    ),
    (
        {"model": M, "input": ["hello " * 8000] * 40},
        400,
        None,
        "max_tokens_per_request",
        "Requested 320040 tokens, max 300000",
    ),
    (
        {"model": "text-embedding-ada-002", "input": "a", "dimensions": 8},
        400,
        None,
        None,
        "This model does not support specifying dimensions.",
    ),
    (
        {"model": M, "input": "a", "dimensions": 0},
        400,
        "dimensions",
        "integer_below_min_value",
        "Invalid 'dimensions'",
    ),
    (
        {"model": M, "input": "a", "dimensions": 1537},
        400,
        "dimensions",
        "integer_above_max_value",
        "Invalid 'dimensions'",
    ),
    (
        {"model": M, "input": "a", "dimensions": 10**40},
        400,
        "dimensions",
        "integer_above_max_value",
        "Invalid 'dimensions'",
    ),
    (
        {"model": M, "input": "a", "dimensions": "8"},
        400,
        "dimensions",
        "invalid_type",
        "Invalid type for 'dimensions'",
    ),
    (
        {"model": M, "input": "a", "encoding_format": "int8"},
        400,
        "encoding_format",
        "invalid_value",
        "Invalid value: 'int8'",
    ),
    ({"model": 7, "input": "a"}, 400, "model", "invalid_type", "Invalid type for 'model'"),
    ({"input": "a"}, 400, None, None, "you must provide a model parameter"),
    ({"model": M}, 400, "input", "missing_required_parameter", "Missing required parameter: 'input'."),
    (
        {"model": "gpt-4o", "input": "a"},
        400,
        None,
        None,
        "You are not allowed to generate embeddings from this model",
    ),
    ({"model": "nope", "input": "a"}, 404, None, "model_not_found", "The model `nope` does not exist"),
]


@pytest.mark.parametrize(("body", "status", "param", "code", "message"), BAD)
def test_bad_input_gets_openai_errors(
    sim: Server, body: dict, status: int, param, code, message: str
) -> None:
    response = _post(sim, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"].startswith(message), error
    assert (error["param"], error["code"]) == (param, code), error
    assert set(error) == {"message", "type", "param", "code"}


def test_not_json_and_wrong_body_are_400(sim: Server) -> None:
    for content in (b"{not json", b"[1, 2]", b'"text"'):
        response = httpx.post(
            f"{sim.url}{URL}", content=content, headers={"authorization": "Bearer sk-emb"}, timeout=10
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_journal_and_headers(sim: Server) -> None:
    response = httpx.post(
        f"{sim.url}{URL}",
        json={"model": M, "input": "journal me"},
        headers={"authorization": "Bearer sk-emb", "x-llmsim-trace": "emb-journal-1"},
        timeout=10,
    )
    assert response.status_code == 200 and response.headers["x-llmsim-instance"] == INSTANCE
    journal = httpx.get(f"{sim.url}/llmsim/requests", params={"trace": "emb-journal"}, timeout=10).json()
    (entry,) = journal["entries"]
    assert entry["path"] == URL and entry["model"] == M
    assert entry["usage"]["prompt_tokens"] == response.json()["usage"]["prompt_tokens"]
    assert entry["usage"]["completion_tokens"] == 0


def test_faults_apply(sim: Server) -> None:
    response = httpx.post(
        f"{sim.url}{URL}",
        json={"model": M, "input": "fail me"},
        headers={"authorization": "Bearer sk-emb", "x-llmsim-fault": "server_error"},
        timeout=10,
    )
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
