"""The command-line arguments ``llmsim probe`` and ``llmsim check`` share: the gateway and how to
talk to it, the instances behind it and how to read their journals."""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit


class UsageError(Exception):
    """Bad arguments or an unreachable URL: one sentence, exit code 2."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "url", help="gateway or instance URL; /v1/chat/completions is appended when it has no path"
    )
    p.add_argument("--model", default="gpt-4o-mini", help="model to ask for (default gpt-4o-mini)")
    p.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    p.add_argument(
        "--header", "-H", action="append", default=[], metavar="K:V", help="extra header (repeatable)"
    )
    p.add_argument(
        "--instances",
        help="instances behind the gateway: IDs or URLs (comma list; URLs let llmsim read their "
        "journals) or just how many; default: the local cluster's running instances",
    )
    p.add_argument(
        "--run-dir",
        help="local cluster run dir (default $LLMSIM_RUN_DIR, else the nearest .llmsim/default upward)",
    )
    p.add_argument(
        "--admin-token",
        help="for the instances' control API and journals; default: the local cluster's, "
        "else $LLMSIM_ADMIN_TOKEN",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (30)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on any warning (unknown instance set, journals that cannot be read, ...)",
    )


def target_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{url!r} is not an http(s) URL")
    if parts.path in ("", "/"):
        return url.rstrip("/") + "/v1/chat/completions"
    return url


def headers(values: list[str], api_key: str | None) -> dict[str, str]:
    """``--header K:V`` (repeatable) and ``--api-key``, as request headers."""
    out = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header takes K:V, got {item!r}")
        out[name.strip()] = value.strip()
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out
