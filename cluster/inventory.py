"""Which instances a gateway is supposed to spread traffic over, and where their journals are.

Without this, "every instance I saw" would pass for "every instance there is", and a gateway that
routes around a faulty backend would look perfect. Sources, first found wins: ``--instances``
(IDs, URLs or a count), else the ``cluster.json`` of ``--run-dir``, ``$LLMSIM_RUN_DIR`` or the
nearest ``.llmsim/default/`` upward from the current directory. Instances supervisord does not
run right now are left out and listed as stopped. When nothing says, the set is unknown, and the
verdict says so.
"""

from __future__ import annotations

import asyncio
import os
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from llmsim_cluster import ClusterError, control, state, supervisor

RUNNING_STATES = ("RUNNING", "STARTING")
RUN_DIR_ENV = "LLMSIM_RUN_DIR"


@dataclass
class Member:
    id: str  # the instance ID; its URL when it did not say (then it counts as expected but unnamed)
    url: str | None  # where its journal is; None when only the ID is known


@dataclass
class Inventory:
    members: list[Member] = field(default_factory=list)
    source: str | None = None  # where the set came from; None: unknown
    count: int | None = None  # --instances N: how many, not which
    stopped: dict[str, str] = field(default_factory=dict)  # ID -> supervisord state
    notes: list[str] = field(default_factory=list)  # what could not be found out
    token: str | None = None  # admin token for the journals
    run_dir: Path | None = None

    @property
    def known(self) -> bool:
        return self.source is not None

    def expected(self) -> list[str] | int | None:
        """What :func:`cluster.routing.distribution` takes as ``instances``."""
        if self.count is not None:
            return self.count
        return [m.id for m in self.members] if self.known else None

    def targets(self) -> list[tuple[str, str]]:
        """(ID, URL) of every member whose journal can be asked for."""
        return [(m.id, m.url) for m in self.members if m.url]


def find_run_dir(explicit: str | None, cwd: Path | None = None) -> Path | None:
    """``--run-dir`` > ``$LLMSIM_RUN_DIR`` > the nearest ``.llmsim/default`` holding a cluster.json."""
    if explicit:
        return Path(explicit).absolute()
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV]).absolute()
    here = (cwd or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / ".llmsim" / state.DEFAULT_NAME
        if (candidate / state.FILE).is_file():
            return candidate
    return None


def _states(run_dir: Path) -> dict[str, str] | None:
    """supervisord's state of each program, or None when it does not answer."""
    api = supervisor.running(run_dir)
    if api is None:
        return None
    try:
        return {info["name"]: info["statename"] for info in api.getAllProcessInfo()}
    except (ClusterError, xmlrpc.client.Error, KeyError, TypeError):
        return None


def _is_url(item: str) -> bool:
    return "://" in item


async def _identify(urls: list[str], timeout: float = 3.0) -> dict[str, str | None]:
    """URL -> the ID its /health reports, or None."""

    async def one(http: aiohttp.ClientSession, url: str) -> str | None:
        try:
            async with http.get(url.rstrip("/") + "/health") as response:
                data = await response.json(content_type=None)
                value = data.get("instance") if isinstance(data, dict) else None
                return value if isinstance(value, str) and value else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return None

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        ids = await asyncio.gather(*(one(http, url) for url in urls))
    return dict(zip(urls, ids, strict=True))


def resolve(spec: str | None, run_dir: str | None, token: str | None = None) -> Inventory:
    """The inventory for ``--instances spec`` / ``--run-dir``; ``token`` is ``--admin-token``."""
    inv = Inventory(token=token)
    directory = find_run_dir(run_dir)
    cluster = state.load(directory) if directory else None
    if run_dir and cluster is None:
        inv.notes.append(f"no cluster.json in {directory}")
    if cluster is not None and directory is not None:
        inv.run_dir = directory
        if inv.token is None:
            inv.token = control.admin_token(directory, cluster)
    if inv.token is None:
        inv.token = os.environ.get(control.TOKEN_ENV) or None
    if spec:
        _from_spec(inv, spec.strip(), cluster)
    elif cluster is not None and directory is not None:
        _from_cluster(inv, cluster, directory)
    return inv


def _from_spec(inv: Inventory, spec: str, cluster: state.Cluster | None) -> None:
    inv.source = "--instances"
    if spec.isdigit():
        inv.count = int(spec)
        return
    items = [v.strip() for v in spec.split(",") if v.strip()]
    urls = [i.rstrip("/") for i in items if _is_url(i)]
    ids = asyncio.run(_identify(urls)) if urls else {}
    unmapped = []
    for item in items:
        if _is_url(item):
            url = item.rstrip("/")
            found = ids.get(url)
            if found is None:
                inv.notes.append(f"{url} did not say which instance it is (GET /health)")
            inv.members.append(Member(found or url, url))
        else:
            known = cluster.instance(item) if cluster else None
            inv.members.append(Member(item, known.url if known else None))
            if known is None:
                unmapped.append(item)
    if unmapped and len(unmapped) < len(items):
        where = "the local cluster" if cluster else "no cluster.json found"
        inv.notes.append(f"no URL for {', '.join(unmapped)} ({where}): give URLs to read their journals")


def _from_cluster(inv: Inventory, cluster: state.Cluster, directory: Path) -> None:
    inv.source = f"cluster.json in {directory}"
    states = _states(directory)
    if states is None:
        inv.notes.append(f"supervisord of {directory} does not answer: instance states unknown")
    for instance in cluster.instances:
        now = (states or {}).get(instance.id, "RUNNING" if states is None else "UNKNOWN")
        if now in RUNNING_STATES:
            inv.members.append(Member(instance.id, instance.url))
        else:
            inv.stopped[instance.id] = now
