"""Real gateways in front of real instances: nginx, haproxy and a LiteLLM proxy, each run from the
README's recipe (compose/local/), smoke-tested for what a user checks first: traffic reaches every
instance, streams pass unbuffered, the client's x-llmsim-* headers reach the instance, and with one
instance answering 500s, retries on hide it from the client while retries off let its 500s through.

The gateways are shared by the whole module, so the order matters: the checks with healthy
instances come before those that make an instance faulty (nginx then rests that instance for its
fail_timeout, LiteLLM cools it down), and the LiteLLM tests come last, their proxies launched as the
module starts (a start takes 10-20 s) so that they start while the nginx and haproxy tests run.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from llmsim_cluster import check
from tests import haproxy, litellm, nginx
from tests.servers import Server, run_server

pytestmark = pytest.mark.gateways  # make test-gateways

IDS = ("gw-1", "gw-2", "gw-3")
FAULTY = "gw-3"  # the instance the failover tests break
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello, how are you?"}]}
TIMEOUT = 30
# The places a response names the instance that produced it: llmsim's header, LiteLLM's renamed
# copy of it (it prefixes every provider header), else the body's system_fingerprint.
IDENTITY_HEADERS = ("x-llmsim-instance", "llm_provider-x-llmsim-instance")


@dataclass
class Gateway:
    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)

    def chat(self, headers: dict[str, str] | None = None, **body) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/chat/completions",
            json={**CHAT, **body},
            headers={**self.headers, **(headers or {})},
            timeout=TIMEOUT,
        )


def instance_of(response: httpx.Response) -> str | None:
    for name in IDENTITY_HEADERS:
        if name in response.headers:
            return response.headers[name]
    try:
        return response.json().get("system_fingerprint")
    except ValueError:
        return None


def attempts(instances: list[Server]) -> Counter:
    """Chat completions each instance has received so far, by its ID (all statuses)."""
    counts = Counter()
    for server, instance_id in zip(instances, IDS, strict=True):
        stats = httpx.get(f"{server.url}/llmsim/stats", timeout=5).json()
        counts[instance_id] = sum(stats["requests"].get("/v1/chat/completions", {}).values())
    return counts


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line in pytest's output even when the test passes (versions, start-up times)."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():  # else it lands in the test's captured output
        reporter.write("\n")  # the progress dots do not end their line
        reporter.write_line(line)


# --- the module's processes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def instances() -> Iterator[list[Server]]:
    with ExitStack() as stack:
        yield [stack.enter_context(run_server(["--instance-id", instance_id])) for instance_id in IDS]


@pytest.fixture(scope="module")
def nginx_gateways(instances, tmp_path_factory, request) -> Iterator[dict[bool, str]]:
    """nginx from the recipe, by retries on (True) or off (False)."""
    tmp = tmp_path_factory.mktemp("nginx")
    ports = [server.port for server in instances]
    with nginx.run_recipe(tmp, ports, retries=True) as on, nginx.run_recipe(tmp, ports, retries=False) as off:
        report(request, f"gateways: nginx {nginx.version()}")
        yield {True: on, False: off}


@pytest.fixture(scope="module")
def haproxy_gateways(instances, tmp_path_factory, request) -> Iterator[dict[bool, str]]:
    """haproxy from the recipe, by retries on (True) or off (False)."""
    tmp = tmp_path_factory.mktemp("haproxy")
    ports = [server.port for server in instances]
    with (
        haproxy.run_haproxy(tmp, ports, retries=True) as on,
        haproxy.run_haproxy(tmp, ports, retries=False) as off,
    ):
        report(request, f"gateways: haproxy {haproxy.version()}")
        yield {True: on, False: off}


@pytest.fixture(scope="module", autouse=True)
def litellm_launch(request, tmp_path_factory) -> Iterator[Callable[[], dict[str, litellm.Proxy]] | None]:
    """Launches the LiteLLM proxies as the module starts, when any of its selected tests uses them,
    so their 10-20 s start overlaps the nginx and haproxy tests. The recipe (num_retries 2,
    allowed_fails 1, cooldown 30 s) and the same with num_retries 0."""
    selected = [item for item in request.session.items if item.module is request.module]
    if not any("litellm" in item.name for item in selected):
        yield None
        return
    ports = [server.port for server in request.getfixturevalue("instances")]
    # allowed_fails 0 on the retrying proxy: LiteLLM picks each retry's deployment at random again,
    # so with a failure allowed a retry may land on the failing one; cooled down at once, it cannot.
    variants = {
        "litellm-retries": {"num_retries": 2, "allowed_fails": 0},
        "litellm-no-retries": {"num_retries": 0},
    }
    with litellm.start_litellms(tmp_path_factory.mktemp("litellm"), ports, variants) as ready:
        yield ready


@pytest.fixture(scope="module")
def litellm_proxies(litellm_launch, request) -> dict[bool, litellm.Proxy]:
    """The proxies by retries on (True) or off (False), once they answer."""
    proxies = litellm_launch()
    on, off = proxies["litellm-retries"], proxies["litellm-no-retries"]
    report(
        request,
        f"gateways: litellm {on.version} (venv {litellm.venv_dir()}), "
        f"two proxies answered {max(on.startup_s, off.startup_s):.1f} s after launch",
    )
    return {True: on, False: off}


def gateway(request: pytest.FixtureRequest, name: str, retries: bool = True) -> Gateway:
    if name == "litellm":
        proxy = request.getfixturevalue("litellm_proxies")[retries]
        return Gateway(f"{name} retries={retries}", proxy.url, proxy.headers)
    return Gateway(f"{name} retries={retries}", request.getfixturevalue(f"{name}_gateways")[retries])


@contextmanager
def faulty(server: Server) -> Iterator[None]:
    """The instance answers every chat completion with a 500 until the block ends."""
    url = f"{server.url}/llmsim/config"
    httpx.patch(
        url, json={"failure_rate": 1.0, "failure_types": "server_error"}, timeout=5
    ).raise_for_status()
    try:
        yield
    finally:
        httpx.patch(url, json={"failure_rate": 0.0}, timeout=5).raise_for_status()


# --- the checks, run below for each gateway -----------------------------------------------------


def check_traffic_reaches_every_instance(request, instances, name) -> None:
    gw = gateway(request, name)
    before = attempts(instances)
    responses = [gw.chat() for _ in range(30)]
    assert [r.status_code for r in responses] == [200] * 30, responses[0].text
    answered = Counter(instance_of(r) for r in responses)
    assert set(answered) == set(IDS), answered
    if name != "litellm":  # round-robin, one request at a time: an even split
        assert max(answered.values()) - min(answered.values()) <= 1, answered
    # Each answer names the instance that produced it, and nobody retried.
    assert attempts(instances) - before == answered


def check_client_headers_reach_the_instance(request, instances, name) -> None:
    """x-llmsim-fault set by the client is acted on by the instance (for LiteLLM: only thanks to
    forward_client_headers_to_llm_api)."""
    gw = gateway(request, name)
    before = {server.url: httpx.get(f"{server.url}/llmsim/stats").json()["faults"] for server in instances}
    response = gw.chat({"x-llmsim-fault": "context_length"})
    assert response.status_code == 400, response.text
    assert "context length" in response.text
    after = {server.url: httpx.get(f"{server.url}/llmsim/stats").json()["faults"] for server in instances}
    hit = [
        instance_id
        for instance_id, server in zip(IDS, instances, strict=True)
        if after[server.url].get("context_length", 0) > before[server.url].get("context_length", 0)
    ]
    assert hit == [instance_of(response)], (hit, dict(response.headers))


def check_stream_passes_through_unbuffered(request, instances, name) -> None:
    """Eight tokens 150 ms apart: the first reaches the client long before the last."""
    gw = gateway(request, name)
    pace = {"x-llmsim-itl-ms": "150", "x-llmsim-output-tokens": "8"}
    arrivals: list[float] = []
    lines: list[str] = []
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={**gw.headers, **pace},
        timeout=TIMEOUT,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                lines.append(line)
                arrivals.append(time.monotonic())
    assert lines[-1] == "data: [DONE]"
    assert any('"system_fingerprint":"gw-' in line.replace(" ", "") for line in lines)
    # 7 gaps of 150 ms between the tokens: buffered, they would all arrive at once at the end.
    assert arrivals[-1] - arrivals[0] >= 0.6, [round(t - arrivals[0], 2) for t in arrivals]


# --- nginx and haproxy --------------------------------------------------------------------------

PROXIES = ("nginx", "haproxy")


@pytest.mark.parametrize("name", PROXIES)
@pytest.mark.parametrize(
    "check",
    [
        check_traffic_reaches_every_instance,
        check_client_headers_reach_the_instance,
        check_stream_passes_through_unbuffered,
    ],
    ids=lambda check: check.__name__.removeprefix("check_"),
)
def test_healthy(request, instances, check, name) -> None:
    check(request, instances, name)


# One instance answering 500s (after the healthy checks: nginx then rests that instance).


def send_until(gw: Gateway, done: Callable[[list[httpx.Response]], bool], limit: int = 60) -> list:
    responses: list[httpx.Response] = []
    while len(responses) < limit and not done(responses):
        responses.append(gw.chat())
    return responses


@pytest.mark.parametrize("name", PROXIES)
def test_without_retries_the_faulty_instances_500s_reach_the_client(request, instances, name) -> None:
    gw = gateway(request, name, retries=False)
    with faulty(instances[2]):
        responses = [gw.chat() for _ in range(12)]
    failed = [r for r in responses if r.status_code == 500]
    assert len(failed) == 4, Counter(r.status_code for r in responses)  # round-robin: every third
    assert {instance_of(r) for r in failed} == {FAULTY}


@pytest.mark.parametrize("name", PROXIES)
def test_with_retries_the_client_sees_no_500(request, instances, name) -> None:
    gw = gateway(request, name, retries=True)
    before = attempts(instances)
    with faulty(instances[2]):
        responses = [gw.chat() for _ in range(12)]
    assert [r.status_code for r in responses] == [200] * 12
    answered = Counter(instance_of(r) for r in responses)
    assert FAULTY not in answered
    tried = attempts(instances) - before
    assert tried[FAULTY] >= 1, tried  # it was tried (and failed) ...
    assert sum(tried.values()) == 12 + tried[FAULTY]  # ... and each of its 500s retried elsewhere


def test_nginx_does_not_retry_a_post_without_non_idempotent(instances, tmp_path) -> None:
    ports = [server.port for server in instances]
    conditions = "error timeout http_500 http_502 http_503 http_504"  # the recipe's, less non_idempotent
    with nginx.run_recipe(tmp_path, ports, next_upstream=conditions) as url, faulty(instances[2]):
        responses = [Gateway("nginx", url).chat() for _ in range(6)]
    failed = [r for r in responses if r.status_code == 500]
    assert failed and {instance_of(r) for r in failed} == {FAULTY}


# --- LiteLLM (last: its proxies start while the tests above run) -------------------------------


def test_litellm_needs_its_master_key(litellm_proxies, instances) -> None:
    proxy = litellm_proxies[True]
    before = attempts(instances)
    # Without a database LiteLLM refuses a missing key with a 500 and a wrong one with a 400
    # ("No connected db."), not a 401; either way nothing reaches an instance.
    for headers in ({}, {"authorization": "Bearer sk-wrong"}):
        refused = Gateway("litellm", proxy.url, headers).chat()
        assert refused.status_code in (400, 401, 500), refused.text
    assert attempts(instances) == before
    reply = Gateway("litellm", proxy.url, proxy.headers).chat()
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"]
    assert reply.headers["llm_provider-x-llmsim-instance"] == reply.json()["system_fingerprint"]


@pytest.mark.parametrize(
    "check",
    [
        check_traffic_reaches_every_instance,
        check_client_headers_reach_the_instance,
        check_stream_passes_through_unbuffered,
    ],
    ids=lambda check: check.__name__.removeprefix("check_"),
)
def test_litellm_healthy(request, instances, check) -> None:
    check(request, instances, "litellm")


def test_litellm_without_retries_passes_500s_until_cooldown(request, instances) -> None:
    """num_retries 0, allowed_fails 1: the client gets the faulty deployment's 500s (attributed to it
    through LiteLLM's renamed header) until the second one cools the deployment down; after that
    nothing reaches it. LiteLLM picks at random, so the test sends until the second 500 (the
    chance of fewer than two in 60 is below 1e-9) rather than a fixed number of requests."""
    gw = gateway(request, "litellm", retries=False)
    before = attempts(instances)
    with faulty(instances[2]):
        responses = send_until(gw, lambda rs: sum(r.status_code != 200 for r in rs) >= 2)
        after_cooldown = [gw.chat() for _ in range(10)]
    failed = [r for r in responses if r.status_code != 200]
    assert len(failed) == 2, Counter(r.status_code for r in responses)
    assert {r.status_code for r in failed} == {500}
    assert {r.headers.get("llm_provider-x-llmsim-instance") for r in failed} == {FAULTY}
    assert "InternalServerError" in failed[0].text
    assert [r.status_code for r in after_cooldown] == [200] * 10
    assert FAULTY not in {instance_of(r) for r in after_cooldown}
    tried = attempts(instances) - before
    assert tried[FAULTY] == 2  # no retries: each attempt there was a client-visible error


def test_litellm_with_retries_hides_the_faulty_deployment(request, instances) -> None:
    gw = gateway(request, "litellm", retries=True)
    before = attempts(instances)
    with faulty(instances[2]):
        responses = send_until(gw, lambda rs: (attempts(instances) - before)[FAULTY] >= 1)
        responses += [gw.chat() for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert FAULTY not in {instance_of(r) for r in responses}
    tried = attempts(instances) - before
    assert sum(tried.values()) == len(responses) + tried[FAULTY]  # attempts > answers


# --- the README shows the recipes the tests run -------------------------------------------------


def test_readme_excerpts_are_the_recipes() -> None:
    """Every line of the README's nginx, haproxy and LiteLLM excerpts is a line of the file the
    tests run (comments and `# ...` elisions aside)."""
    root = nginx.RECIPE.parent.parent.parent
    readme = (root / "README.md").read_text()
    section = readme.split("## Test your gateway", 1)[1].split("\n## ", 1)[0]
    files = {"nginx": nginx.RECIPE, "haproxy": haproxy.RECIPE, "yaml": litellm.CONFIG}
    seen = set()
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        if lang not in files or (lang == "yaml" and "model_list:" not in body):
            continue
        seen.add(lang)
        recipe = {line.strip() for line in files[lang].read_text().splitlines()}
        for line in body.splitlines():
            if line.strip() and not line.strip().startswith("#"):
                assert line.strip() in recipe, f"README {lang} excerpt: {line.strip()!r} not in {files[lang]}"
    assert seen == set(files)


# --- llmsim check through LiteLLM: the scorecard attributes errors through the journals ----------


@pytest.mark.parametrize("retries", [False, True], ids=["litellm-no-retries", "litellm-retries"])
def test_litellm_check_failover_5xx(request, capsys, instances, retries: bool) -> None:
    """LiteLLM's error bodies carry no identity and it renames the header: the check still blames
    the broken instance (its journal shows the attempts), and num_retries shows as attempts."""
    proxy = request.getfixturevalue("litellm_proxies")[retries]
    target = instances[0]  # not the one the tests above cooled down
    key = proxy.master_key
    argv = [proxy.url, "--model", proxy.model, "--api-key", key, "--scenarios", "failover-5xx", "-n", "12"]
    argv += ["--instances", ",".join(s.url for s in instances), "--target", IDS[0], "--heal-wait", "1"]
    capsys.readouterr()
    code = check.main([*argv, "--json"])
    (score,) = json.loads(capsys.readouterr().out)["scores"]
    figures = score["figures"]
    broken = figures["per_instance"][IDS[0]]
    assert broken["attempts"] >= 1 and broken["answers"] == 0, score
    if retries:
        assert (score["verdict"], code) == ("pass", 0), score
        assert figures["client_errors"] == 0 and figures["attempts"] > figures["requests"]
    else:
        assert (score["verdict"], code) == ("fail", 1), score
        assert figures["client_errors"] >= 1 and broken["blamed"] == figures["client_errors"]
        assert figures["gateway_errors"] == 0
    config = httpx.get(f"{target.url}/llmsim/config", timeout=5).json()
    assert config["failure_rate"] == 0  # restored
