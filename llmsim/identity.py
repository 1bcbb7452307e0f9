"""Which instance this is: the ID every response carries."""

from __future__ import annotations

import socket

from llmsim.settings import Settings

INSTANCE_HEADER = "x-llmsim-instance"
REQUEST_ID_HEADER = "x-request-id"


def resolve_instance_id(settings: Settings) -> str:
    """--instance-id > LLMSIM_INSTANCE_ID > POD_NAME (all folded into settings) > <hostname>:<port>."""
    return settings.instance_id or f"{settings.hostname or socket.gethostname()}:{settings.port}"
