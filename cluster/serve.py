"""What the cluster says to ``llmsim serve``: its flags, its environment variables and its secrets.

Names come from the server's own Settings (fields, env prefix) and its own list of secret settings
(``SECRET_SETTINGS``), so a renamed or added setting cannot drift out of step here.
"""

from __future__ import annotations

import sys
from collections.abc import Collection

from llmsim.settings import SECRET_SETTINGS, Settings
from llmsim_cluster import ClusterError
from llmsim_cluster.state import Instance

ENV_PREFIX: str = Settings.model_config.get("env_prefix", "")
ADMIN_TOKEN = "admin_token"  # Settings field names (tests check they still are)
ADMIN_TOKEN_FILE = "admin_token_file"


def flag(setting: str) -> str:
    """``admin_token`` -> ``--admin-token``, as ``llmsim serve`` spells its flags."""
    return "--" + setting.replace("_", "-")


def env_name(setting: str) -> str:
    """``admin_token`` -> ``LLMSIM_ADMIN_TOKEN``."""
    return ENV_PREFIX + setting.upper()


def command(instance: Instance, serve_args: list[str]) -> list[str]:
    """The venv's own python, so no activation is needed; our flags last, so they win."""
    ours = {"host": instance.host, "port": str(instance.port), "instance_id": instance.id}
    return [
        sys.executable, "-m", "llmsim", "serve", *serve_args,
        *(part for name, value in ours.items() for part in (flag(name), value)),
    ]  # fmt: skip


def _setting(option: str, flags: dict[str, str | None]) -> str | None:
    """The setting ``option`` names, resolving abbreviations as argparse does (a unique prefix)."""
    if option in flags:
        return flags[option]
    matches = [name for spelled, name in flags.items() if spelled.startswith(option)]
    return matches[0] if len(matches) == 1 else None


def extract(serve_args: list[str], wanted: Collection[str]) -> tuple[list[str], dict[str, str]]:
    """Split the flags of the settings in ``wanted`` (``--name V`` or ``--name=V``, abbreviated or
    not) out of ``serve_args``: (the other args, setting -> value)."""
    flags: dict[str, str | None] = {flag(name): name for name in Settings.model_fields}
    flags.update({"--config": None, "--help": None})  # they take part in argparse's prefix matching
    rest: list[str] = []
    found: dict[str, str] = {}
    args = iter(serve_args)
    for arg in args:
        option, eq, value = arg.partition("=")
        setting = _setting(option, flags) if option.startswith("--") else None
        if setting is None or setting not in wanted:
            rest.append(arg)
            continue
        if not eq:
            value = next(args, None)
            if value is None:
                raise ClusterError(f"{option} after -- needs a value")
        found[setting] = value
    return rest, found


def lift_secrets(serve_args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Move secret flags (``--admin-token X``, ``--api-keys=K``) out of ``serve_args``, into env vars.

    Flags end up in cluster.json, supervisord.conf and every instance's ``ps`` line; the
    environment of supervisord (which its instances inherit) is readable by the same user only.
    A flag wins over the environment in ``llmsim serve``, and the lifted value replaces the
    variable, so the instances get the same value either way.
    """
    rest, secrets = extract(serve_args, SECRET_SETTINGS)
    return rest, {env_name(name): value for name, value in secrets.items()}
