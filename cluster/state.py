"""Where a cluster lives on disk and what it consists of: the run dir and its ``cluster.json``.

``cluster.json`` is the contract with other tools (``llmsim probe``): it names every instance
the cluster is meant to have, so they know which IDs to expect without asking supervisord.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmsim_cluster import ClusterError

DEFAULT_NAME = "default"
FILE = "cluster.json"


@dataclass(frozen=True)
class Instance:
    id: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class Cluster:
    name: str
    host: str
    base_port: int
    id_prefix: str = "sim-"
    serve_args: list[str] = field(default_factory=list)
    size: int = 0
    workdir: str = "."  # where `up` ran: relative paths in serve_args resolve from there

    @property
    def instances(self) -> list[Instance]:
        """Instance K (1-based) is ``<prefix>K`` on ``base_port + K - 1``: stable across scaling."""
        return [
            Instance(f"{self.id_prefix}{k}", self.host, self.base_port + k - 1)
            for k in range(1, self.size + 1)
        ]

    def instance(self, instance_id: str) -> Instance | None:
        return next((i for i in self.instances if i.id == instance_id), None)


def run_dir(name: str = DEFAULT_NAME, override: str | os.PathLike[str] | None = None) -> Path:
    """``override`` (``--run-dir``) > ``$LLMSIM_RUN_DIR`` > ``./.llmsim/<name>/``."""
    chosen = override or os.environ.get("LLMSIM_RUN_DIR") or Path(".llmsim") / name
    return Path(chosen).absolute()


def load(directory: str | os.PathLike[str] | None = None) -> Cluster | None:
    """The cluster described in ``<run dir>/cluster.json``, or None when no cluster is up there.

    ``directory`` defaults to ``$LLMSIM_RUN_DIR``, else ``./.llmsim/default/``.
    """
    path = run_dir(override=directory) / FILE
    try:
        data = json.loads(path.read_text())
        return Cluster(
            name=data["name"],
            host=data["host"],
            base_port=data["base_port"],
            id_prefix=data.get("id_prefix", "sim-"),
            serve_args=list(data.get("serve_args", [])),
            size=len(data["instances"]),
            workdir=data.get("workdir", "."),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"{path} is not a cluster description ({type(exc).__name__}: {exc})") from None


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) readable by us only; an existing one keeps its mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a file), mode 0600."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(directory: Path, cluster: Cluster) -> None:
    """Write ``cluster.json``: instances and serve flags, never a secret (see ``cluster.serve``)."""
    data = asdict(cluster)
    del data["size"]
    data["instances"] = [{**asdict(i), "url": i.url} for i in cluster.instances]
    write_private(directory / FILE, json.dumps(data, indent=2) + "\n")
