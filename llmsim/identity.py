"""Which instance this is: the ID every response carries."""

from __future__ import annotations

import socket

from llmsim.settings import Settings

INSTANCE_HEADER = "x-llmsim-instance"
REQUEST_ID_HEADER = "x-request-id"


def resolve_instance_id(settings: Settings) -> str:
    """--instance-id > LLMSIM_INSTANCE_ID > POD_NAME (all folded into settings) > <hostname>:<port>."""
    return settings.instance_id or f"{settings.hostname or socket.gethostname()}:{settings.port}"


# A client's trace token for one logical request (the probe sends one per request); the journal
# records it, so attempts can be matched across instances whatever a gateway does. It is read from
# this header, else from ``llmsim-trace:<token>`` anywhere in the body (a prompt survives any gateway).
TRACE_HEADER = "x-llmsim-trace"
TRACE_MARK = "llmsim-trace:"
