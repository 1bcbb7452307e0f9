"""What every OpenAI request model here is made of: OpenAI's strictness, its integers, its longest
string and its ``stream_options``; one copy for chat, completions, embeddings and Responses."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


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
