"""Which instance this is: the ID every response carries."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only a type: the header names below are imported where settings are not
    from llmsim.settings import Settings

INSTANCE_HEADER = "x-llmsim-instance"
REQUEST_ID_HEADER = "x-request-id"
# The exact usage one request reports (llmsim.generation.parse_usage):
# ``prompt=1200,completion=40,cached=1024,reasoning=0``, any subset of the keys.
USAGE_HEADER = "x-llmsim-usage"


def resolve_instance_id(settings: Settings) -> str:
    """--instance-id > LLMSIM_INSTANCE_ID > POD_NAME (all folded into settings) > <hostname>:<port>."""
    return settings.instance_id or f"{settings.hostname or socket.gethostname()}:{settings.port}"


# A client's trace token for one logical request (the probe sends one per request); the journal
# records it, so attempts can be matched across instances whatever a gateway does. It is read from
# this header, else from ``llmsim-trace:<token>`` anywhere in the body (a prompt survives any gateway).
TRACE_HEADER = "x-llmsim-trace"
TRACE_MARK = "llmsim-trace:"
