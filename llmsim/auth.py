"""API keys, checked as OpenAI checks them.

Off unless keys are configured (``--api-keys`` or ``--api-keys-file``). Then every request needs
one, as ``Authorization: Bearer <key>`` (OpenAI), ``x-api-key: <key>`` (Anthropic) or ``api-key: <key>``
(Azure OpenAI); a missing or
unknown key is a 401 in OpenAI's envelope and wording. A key's org, project and tier come from the
keys file: the tier picks its rate limits (llmsim.limits). Keys are never logged or echoed in full:
:func:`mask` and ``KeyInfo``'s repr show only their ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llmsim.errors import APIError, Kind
from llmsim.settings import FileError, read_file


@dataclass(frozen=True, slots=True, repr=False)
class KeyInfo:
    key: str
    org: str | None = None
    project: str | None = None
    tier: str | None = None

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return (
            f"KeyInfo(key={mask(self.key)!r}, org={self.org!r}, project={self.project!r}, tier={self.tier!r})"
        )


def mask(key: str) -> str:
    """OpenAI's masking: the first 8 and last 4 characters kept, the rest starred.

    Shorter keys keep a quarter at each end at most, so a short key is never shown whole.
    """
    keep_head, keep_tail = (8, 4) if len(key) >= 20 else (len(key) // 4, len(key) // 4)
    hidden = len(key) - keep_head - keep_tail
    return key[:keep_head] + "*" * hidden + (key[-keep_tail:] if keep_tail else "")


def load_keys(keys: Iterable[str] = (), file: str | Path | None = None) -> dict[str, KeyInfo]:
    """Keys from a list and/or a file of lines ``key [org [project [tier]]]``.

    ``#`` starts a comment; blank lines are skipped; a key listed twice keeps its last entry.
    The file is read as every operator file is (regular, bounded: llmsim.settings.read_file).
    Raises ValueError (FileError) for a line with more than four fields, naming only its number:
    the line holds a key.
    """
    loaded = {key: KeyInfo(key) for key in (k.strip() for k in keys) if key}
    if file:
        for number, line in enumerate(read_file(file, "API keys file").splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) > 4:
                raise FileError(
                    f"{file}:{number}: expected 'key [org [project [tier]]]', got {len(fields)} fields"
                )
            loaded[fields[0]] = KeyInfo(*fields)
    return loaded


_AUTHORIZATION = b"authorization"
_X_API_KEY = b"x-api-key"
_API_KEY = b"api-key"  # Azure OpenAI's


class Authenticator:
    """Finds and checks the key of a request, from its raw ASGI headers."""

    def __init__(self, keys: Mapping[str, KeyInfo]) -> None:
        self.enabled = bool(keys)
        # Raw header bytes -> KeyInfo: the hot path compares bytes, never decodes.
        self._keys = {key.encode(): info for key, info in keys.items()}

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> KeyInfo | None:
        """The request's KeyInfo; None when auth is off. Raises APIError 401 otherwise."""
        if not self.enabled:
            return None
        token = b""
        for name, value in headers:
            if name == _AUTHORIZATION:
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    token = rest.strip()
                    break  # Authorization wins over x-api-key and api-key
            elif name in (_X_API_KEY, _API_KEY) and not token:
                token = value.strip()
        if not token:
            raise APIError(401, kind=Kind.AUTH)
        info = self._keys.get(token)
        if info is None:
            masked = mask(token.decode("latin-1"))
            raise APIError(401, kind=Kind.AUTH, data={"key": masked})
        return info
