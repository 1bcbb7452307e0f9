"""The command-line arguments ``llmsim probe`` and ``llmsim check`` share: the gateway and how to
talk to it, the instances behind it and how to read their journals."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape

from llmsim_cluster.apis import APIS, OPENAI, Api


class UsageError(Exception):
    """Bad arguments or an unreachable URL: one sentence, exit code 2."""


def run(
    prog: str, body: Callable[[], int], usage_errors: tuple[type[Exception], ...], interrupted: str = ""
) -> int:
    """``body()``'s exit code; a usage error or anything unexpected is one sentence on stderr and
    exit code 2 (no traceback), Ctrl-C is 130."""
    err = Console(stderr=True)
    try:
        return body()
    except usage_errors as exc:
        err.print(f"[red]{prog}:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        if interrupted:
            err.print(f"[yellow]{prog}: {interrupted}[/]")
        return 130
    except Exception as exc:  # noqa: BLE001 - whatever it is, one sentence, no traceback
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        err.print(
            f"[red]{prog}:[/] {escape(f'{type(exc).__name__}: {why}')}", highlight=False, soft_wrap=True
        )
        return 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "url",
        help="gateway or instance URL; the API's path (/v1/chat/completions, /v1/messages, /v1/responses) is "
        "appended when it has no path",
    )
    p.add_argument(
        "--api",
        choices=sorted(APIS),
        default=OPENAI.name,
        help="the API to speak: openai chat completions (default), anthropic messages or openai responses",
    )
    p.add_argument(
        "--model",
        help="model to ask for (default: gpt-4o-mini, claude-sonnet-4-5 with --api anthropic)",
    )
    p.add_argument(
        "--api-key", help="sent as Authorization: Bearer KEY (and as x-api-key with --api anthropic)"
    )
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


def chosen_api(args: argparse.Namespace) -> Api:
    return APIS[args.api]


def chosen_model(args: argparse.Namespace) -> str:
    """``--model``, else the API's default model."""
    return args.model or chosen_api(args).default_model


def target_url(url: str, api: Api = OPENAI) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{url!r} is not an http(s) URL")
    if parts.path in ("", "/"):
        return url.rstrip("/") + api.path
    return url


def headers(values: list[str], api_key: str | None, api: Api = OPENAI) -> dict[str, str]:
    """The API's own headers, ``--header K:V`` (repeatable, overriding them) and ``--api-key``."""
    out = dict(api.headers)
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header takes K:V, got {item!r}")
        name = name.strip()
        for same in [k for k in out if k.lower() == name.lower()]:
            del out[same]
        out[name] = value.strip()
    if api_key:
        out |= api.key_headers(api_key)
    return out
