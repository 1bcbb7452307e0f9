"""What every OpenAI request model here is made of: OpenAI's strictness, its integers, its longest
string and its ``stream_options``; one copy for chat, completions, embeddings and Responses. And
the checks they share: reading a body that names its model, ``stream_options`` without ``stream``."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from llmsim.errors import APIError, model_not_found
from llmsim.surfaces.validation import check_complexity, to_api_error


class Model(BaseModel):
    # strict: OpenAI rejects "2" for an integer; unknown fields are ignored, as OpenAI does (and the
    # SDKs add new ones often).
    model_config = ConfigDict(strict=True, extra="ignore")


def _integral(value: Any) -> Any:
    """JSON Schema's integer: 2.0 is one (OpenAI accepts it), "2" and true are not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_integral)]
# OpenAI's longest string: one message's content (or one text part) of up to 10 MiB characters.
MAX_STRING = 10 * 1024 * 1024
Text = Annotated[str, Field(max_length=MAX_STRING)]


class StreamOptions(Model):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


def check_stream_options(options: StreamOptions | None, stream: bool | None) -> None:
    if options is not None and not stream:
        raise APIError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )


Body = TypeVar("Body", bound=BaseModel)


def read_model_body(
    kind: type[Body], raw: bytes, models: frozenset[str], model: str | None = None
) -> tuple[Body, str]:
    """``raw`` validated as ``kind``, and the model it asks for: ``model`` (a deployment named by
    a path) replaces the body's. OpenAI's 400 without one, its 404 for one not served."""
    check_complexity(raw)
    try:
        body = kind.model_validate_json(raw)
    except ValidationError as exc:
        raise to_api_error(exc, raw) from None
    model = model or getattr(body, "model", None)
    if model is None:
        raise APIError(400, "you must provide a model parameter")
    if model not in models:
        raise model_not_found(model)
    return body, model
