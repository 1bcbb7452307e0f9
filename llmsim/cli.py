"""The ``llmsim`` command: ``serve``, ``cluster …``, ``probe`` and ``check`` (the last three imported
lazily)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from enum import Enum
from typing import Any, get_args

from pydantic import ValidationError

from llmsim import __version__
from llmsim.settings import Settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; only flags given on the command line reach Settings."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML or YAML file with settings (env LLMSIM_CONFIG).",
    )
    for name, field in Settings.model_fields.items():
        env = f"LLMSIM_{name.upper()}"
        default = field.default.value if isinstance(field.default, Enum) else field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        extra = f" [env {env}" + (f"; default {default}]" if default not in (None, False) else "]")
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": (field.description or "") + extra}
        annotation = field.annotation
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(annotation, type) and issubclass(annotation, Enum):
            kwargs["choices"] = [m.value for m in annotation]
        elif annotation is int or int in get_args(annotation) and str not in get_args(annotation):
            kwargs["type"] = int
        parser.add_argument(_flag(name), **kwargs)


def settings_from_args(args: argparse.Namespace) -> Settings:
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    if "config" in vars(args):
        os.environ["LLMSIM_CONFIG"] = args.config
    return Settings(**given)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = settings_from_args(args)
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_format == "json":
        # One JSON object a line, nothing around it, so log shippers can parse it as is.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access = logging.getLogger("llmsim.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "server_header": False,
    }
    if settings.reload:
        # The reloader re-imports the app in a child process, which reads its settings back
        # from the environment: put every explicit flag there.
        for name in Settings.model_fields:
            if name in vars(args):
                value = getattr(args, name)
                os.environ[f"LLMSIM_{name.upper()}"] = value if isinstance(value, str) else str(value)
        uvicorn.run("llmsim.app:create_app", factory=True, reload=True, **common)
    else:
        from llmsim import server
        from llmsim.app import create_app

        try:
            app = create_app(settings)
        except (ValueError, OSError) as exc:  # a bad profile file or name: one sentence, no traceback
            print(f"llmsim: {exc}", file=sys.stderr)
            return 2
        server.run(
            app,
            read_timeout=settings.read_timeout,
            shutdown_timeout=settings.shutdown_timeout,
            **common,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmsim", description="An OpenAI-compatible LLM simulator.")
    parser.add_argument("--version", action="version", version=f"llmsim {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run one simulator instance",
        description="Run one simulator instance. Every flag can also be set as an LLMSIM_* "
        "environment variable or in a --config file; flags win over the environment, which "
        "wins over the file.",
    )
    add_settings_arguments(serve)
    serve.set_defaults(handler=_serve)
    # cluster, probe and check have their own parsers in cluster/; imported only when asked for.
    for name, summary in (
        ("cluster", "start and manage N instances under supervisord"),
        ("probe", "send traffic through a gateway and show how it was spread"),
        ("check", "break instances behind a gateway on purpose and score how it copes"),
    ):
        sub = commands.add_parser(name, help=summary, add_help=False, prefix_chars="\0")
        sub.add_argument("rest", nargs=argparse.REMAINDER)
        sub.set_defaults(handler=_delegate(name))
    return parser


def _delegate(name: str):
    def run(args: argparse.Namespace) -> int:
        import importlib

        module = importlib.import_module(f"llmsim_cluster.{'cli' if name == 'cluster' else name}")
        return module.main(args.rest)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        print(f"llmsim: invalid settings: {problems}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
