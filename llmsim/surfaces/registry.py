"""The surfaces an instance serves: each module here has ``routes(engine) -> list[RawRoute]``.

A new wire format is one module under ``llmsim/surfaces/`` plus one entry in :data:`SURFACES`.
Where two surfaces declare the same method and path, the first one listed serves it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from llmsim.surfaces import (
    anthropic_messages,
    azure_openai,
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_responses,
)

if TYPE_CHECKING:
    from llmsim.engine import Engine
    from llmsim.surfaces.routes import RawRoute

SURFACES: tuple[ModuleType, ...] = (
    openai_chat,
    anthropic_messages,
    openai_embeddings,
    openai_completions,
    openai_responses,
    azure_openai,
)


def routes(engine: Engine) -> list[RawRoute]:
    build: list[Callable[[Engine], list[RawRoute]]] = [surface.routes for surface in SURFACES]
    return [route for make in build for route in make(engine)]
