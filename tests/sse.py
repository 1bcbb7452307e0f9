"""Read an SSE chat stream over a real socket, keeping every raw event for inspection."""

from __future__ import annotations

import json
from typing import Any

import httpx


def stream_events(url: str, body: dict[str, Any], headers: dict[str, str] | None = None):
    """Return (response headers, list of parsed chunks, saw_done) for one streamed request."""
    chunks: list[dict[str, Any]] = []
    done = False
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            data = line[len("data: ") :]
            if data == "[DONE]":
                done = True
                continue
            assert not done, "data after [DONE]"
            chunks.append(json.loads(data))
        return r.headers, chunks, done
