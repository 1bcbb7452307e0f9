"""OpenAI ``/v1/embeddings``: deterministic unit vectors, billed as OpenAI bills them.

No tokens are generated, so the route is not :class:`~llmsim.surfaces.endpoint.Generate`: its
endpoint (:class:`Embed`) goes through the Engine's admission stage alone (auth, faults, rate
limits, the queue, and a prefill-only latency plan that grows with the input tokens), then sends
the whole body. The wire format is :class:`EmbeddingsSurface` (module instance
:data:`EMBEDDINGS`), which another path (Azure's deployments) can reuse with the model taken from
its URL.

A vector is a pure function of (model, text): numpy's PCG64 generator set from a blake2b digest
of both, normalised to unit length, so every instance of every run gives the same vector for the
same text. A shortened ``dimensions`` vector is the full vector's head, renormalised, as
OpenAI's text-embedding-3 vectors are. A token-array input is the text its tokens decode to.

The instance ID is in the ``x-llmsim-instance`` header and in a top-level ``llmsim_instance``
field of the body (OpenAI's embedding object has no free field; its schema allows extra keys).
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import Field, WithJsonSchema
from starlette.types import Receive, Scope, Send

from llmsim import tokens
from llmsim.engine import Engine
from llmsim.errors import APIError
from llmsim.surfaces.base import JSON
from llmsim.surfaces.endpoint import CountingEndpoint
from llmsim.surfaces.openai_fields import Int, Model, read_model_body
from llmsim.surfaces.routes import JSON_ONLY, RawRoute, post
from llmsim.surfaces.validation import type_name
from llmsim.workers import in_thread

# OpenAI's limits (the API reference of ``input``).
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
# A token is at most this many characters of text (cl100k's longest is 128 bytes): a longer
# string is over MAX_INPUT_TOKENS without being tokenized.
MAX_TOKEN_CHARS = 128

# Native sizes; other configured models named text-embedding-* get DEFAULT_DIMENSIONS.
DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
DEFAULT_DIMENSIONS = 1536
VOCABULARY_OF = "text-embedding-3-small"  # all three count with cl100k_base
# Models that are not embedding models, whatever else is configured (OpenAI refuses them here).
_NOT_EMBEDDING = ("gpt-", "chatgpt-", "o1", "o3", "o4", "davinci-", "babbage-", "claude")

# Rendering more floats than this (inputs × dimensions) runs in a worker thread.
RENDER_IN_THREAD_FLOATS = 256 * 1024

INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
)


_INPUT_SCHEMA = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": {"type": "string", "minLength": 1}},
        {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": {"type": "integer"}},
        {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_INPUTS,
            "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
        },
    ],
    "description": "A string, an array of strings, an array of token IDs or an array of such arrays: at "
    f"most {MAX_INPUTS} inputs of at most {MAX_INPUT_TOKENS} tokens each, {MAX_REQUEST_TOKENS} in all.",
}


class EmbeddingRequest(Model):
    # Checked by hand (_inputs): a union's errors would name the wrong alternative.
    input: Annotated[Any, WithJsonSchema(_INPUT_SCHEMA)]
    model: str | None = None  # required, with OpenAI's own message (a path may name the model)
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Int | None = Field(None, ge=1)
    user: str | None = None


@dataclass(slots=True)
class EmbeddingJob:
    """A parsed request: the texts to embed and what they are billed."""

    model: str
    texts: list[str]
    prompt_tokens: int
    dimensions: int
    base64: bool


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inputs(value: Any) -> list[str | list[int]]:
    """``input`` as a list of strings and token arrays, in OpenAI's shapes; raises its errors."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        if not value:
            raise APIError(
                400,
                "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty "
                "array instead.",
                "input",
                "empty_array",
            )
        if len(value) > MAX_INPUTS:
            raise APIError(
                400,
                f"Invalid 'input': array too long. Expected an array with maximum length {MAX_INPUTS}, but "
                f"got an array with length {len(value)} instead.",
                "input",
                "array_above_max_length",
            )
        items = [value] if all(map(_is_token, value)) else value  # one token array
    else:
        raise APIError(
            400,
            "Invalid type for 'input': expected one of a string, an array of strings, an array of "
            f"integers, or an array of arrays of integers, but got {type_name(value)} instead.",
            "input",
            "invalid_type",
        )
    kinds = {type(item) for item in items}
    if kinds == {str}:
        if not all(items):
            raise APIError(400, INVALID_INPUT)  # OpenAI's words (and null param) for an empty string
        return items
    if kinds == {list} and all(item and all(map(_is_token, item)) for item in items):
        return items
    raise APIError(400, INVALID_INPUT)


def _too_long() -> APIError:
    return APIError(400, f"Invalid 'input': maximum context length is {MAX_INPUT_TOKENS} tokens.")


def _text_and_count(item: str | list[int], tokenizer: tokens.Tokenizer) -> tuple[str, int]:
    if isinstance(item, str):
        if len(item) > MAX_INPUT_TOKENS * MAX_TOKEN_CHARS:
            raise _too_long()  # certainly too long: not worth tokenizing
        return item, tokenizer.count(item)
    if len(item) > MAX_INPUT_TOKENS:
        raise _too_long()
    encoding = getattr(tokenizer, "encoding", None)
    if encoding is None:  # a model without a known vocabulary: the IDs stand for themselves
        return " ".join(map(str, item)), len(item)
    try:
        return encoding.decode_bytes(item).decode("utf-8", errors="replace"), len(item)
    except (KeyError, ValueError, OverflowError, TypeError):  # an ID outside the vocabulary
        raise APIError(400, INVALID_INPUT) from None


def is_embedding_model(model: str) -> bool:
    return model in DIMENSIONS or not model.startswith(_NOT_EMBEDDING)


_GENERATORS = threading.local()  # one per thread: batches above RENDER_IN_THREAD_FLOATS render in one


def _digest(model: str, text: str) -> bytes:
    return hashlib.blake2b(f"{model}\0{text}".encode(), digest_size=32).digest()


def _vector(digest: bytes, size: int) -> np.ndarray:
    """A unit vector (float64) drawn by a PCG64 generator whose 128-bit state and increment are the
    digest, set directly: seeding a new generator through numpy's SeedSequence costs more than
    the draw."""
    generator = getattr(_GENERATORS, "generator", None)
    if generator is None:
        generator = _GENERATORS.generator = np.random.Generator(np.random.PCG64())
    generator.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(digest[:16], "little"),
            "inc": int.from_bytes(digest[16:], "little") | 1,
        },
        "has_uint32": 0,
        "uinteger": 0,
    }
    values = generator.standard_normal(size)
    return values / math.sqrt(values @ values)


def encoded(model: str, text: str, dimensions: int, as_base64: bool) -> bytes:
    """The ``embedding`` value as the body carries it: a JSON array of float32 or a base64 string
    of their little-endian bytes, shortened and renormalised to ``dimensions`` as OpenAI does."""
    return _encoded(_digest(model, text), DIMENSIONS.get(model, DEFAULT_DIMENSIONS), dimensions, as_base64)


# Cached by the text's digest (32 bytes a key, whatever the text's length): a vector is a pure
# function of its text, and writing 1,536 floats as JSON is most of what a response costs. At most
# 256 x 3,072 floats as text (~10 MB).
@lru_cache(maxsize=256)
def _encoded(digest: bytes, size: int, dimensions: int, as_base64: bool) -> bytes:
    values = _vector(digest, size)
    if dimensions < size:
        values = values[:dimensions] / np.linalg.norm(values[:dimensions])
    values = values.astype("<f4")
    if as_base64:
        return b'"%s"' % base64.b64encode(values.tobytes())
    return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)


class EmbeddingsSurface:
    """OpenAI's embeddings wire format: parse a body into an :class:`EmbeddingJob`, render one."""

    wire = None  # OpenAI's envelope and headers

    def parse(self, raw: bytes, models: frozenset[str], model: str | None = None) -> EmbeddingJob:
        """``model`` (a deployment in a path) replaces the body's."""
        body, model = read_model_body(EmbeddingRequest, raw, models, model)
        if not is_embedding_model(model):
            raise APIError(400, "You are not allowed to generate embeddings from this model")
        native = DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
        if body.dimensions is not None:
            if not model.startswith("text-embedding-3"):
                raise APIError(400, "This model does not support specifying dimensions.")
            if body.dimensions > native:
                raise APIError(
                    400,
                    f"Invalid 'dimensions': integer above maximum value. Expected a value <= {native}, "
                    f"but got {body.dimensions} instead.",
                    "dimensions",
                    "integer_above_max_value",
                )
        tokenizer = tokens.for_model(model)
        texts = []
        total = 0
        for item in _inputs(body.input):
            text, count = _text_and_count(item, tokenizer)
            if count > MAX_INPUT_TOKENS:
                raise _too_long()
            texts.append(text)
            total += count
        if total > MAX_REQUEST_TOKENS:
            raise APIError(
                400,
                f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
                code="max_tokens_per_request",
                type="max_tokens_per_request",
            )
        return EmbeddingJob(model, texts, total, body.dimensions or native, body.encoding_format == "base64")

    def render(self, job: EmbeddingJob, instance: str) -> bytes:
        data = b",".join(
            b'{"object":"embedding","index":%d,"embedding":%s}'
            % (index, encoded(job.model, text, job.dimensions, job.base64))
            for index, text in enumerate(job.texts)
        )
        usage = {"prompt_tokens": job.prompt_tokens, "total_tokens": job.prompt_tokens}
        rest = orjson.dumps({"model": job.model, "usage": usage, "llmsim_instance": instance})
        return b'{"object":"list","data":[%s],%s' % (data, rest[1:])


EMBEDDINGS = EmbeddingsSurface()


class Embed(CountingEndpoint):
    """The embeddings route as a plain ASGI endpoint: the Engine's admission stage (auth, faults,
    limits, the queue, a prefill-only latency plan) without generation, then the whole body.

    ``model_from`` names the model from the request's scope (a path parameter) instead of the body.
    """

    vocabulary = VOCABULARY_OF
    default = EMBEDDINGS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine, handler = self.engine, self.handler
        turn = engine.admit(scope)
        job = await self.parsed(scope, receive)
        usage = turn.overrides.usage
        if usage is not None and usage.prompt is not None:  # x-llmsim-usage: only prompt applies here
            job.prompt_tokens = usage.prompt
        try:
            total = job.prompt_tokens
            await engine.admission(scope, receive, turn, job.model, total, total, 0)
            if len(job.texts) * job.dimensions > RENDER_IN_THREAD_FLOATS:
                assert turn.presence is not None  # admission made it
                payload = await turn.presence.wait(in_thread(handler.render, job, engine.instance_id))
            else:
                payload = handler.render(job, engine.instance_id)
            await engine.respond(turn, send, payload, JSON)
        finally:
            engine.end(turn)


def routes(engine: Engine) -> list[RawRoute]:
    return [
        post(
            "/v1/embeddings",
            Embed(engine),
            EmbeddingRequest,
            tag="OpenAI",
            summary="Create embeddings",
            operation_id="create_embedding",
            description="OpenAI's embeddings: deterministic unit vectors (the same text and model give the "
            "same vector on every instance), `dimensions` (text-embedding-3 models), `encoding_format` "
            "float or base64; usage counted with the model's tokenizer. Timing, faults and limits follow "
            "the instance's settings, with a prefill-only latency plan; the instance ID is also in the "
            "body's `llmsim_instance`.",
            answer="A `list` of `embedding` objects with `usage`.",
            statuses=(400, 401, 404, 413, 429, 500, 503, 504),
            content=JSON_ONLY,
        )
    ]
