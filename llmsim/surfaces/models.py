"""OpenAI ``/v1/models``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmsim.errors import APIError

# A fixed creation time keeps responses identical across instances and restarts.
CREATED = 1_700_000_000


def _model(model_id: str) -> dict[str, Any]:
    owner = "openai" if model_id.startswith(("gpt-", "o1", "o3", "o4", "chatgpt")) else "llmsim"
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": owner}


def model_list(models: Sequence[str]) -> dict[str, Any]:
    return {"object": "list", "data": [_model(m) for m in models]}


def model(model_id: str, models: Sequence[str]) -> dict[str, Any]:
    if model_id not in models:
        raise APIError(
            404,
            f"The model '{model_id}' does not exist",
            param="model",
            code="model_not_found",
        )
    return _model(model_id)
