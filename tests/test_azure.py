"""Azure OpenAI's paths (issue 14) against a real `llmsim serve`: the official SDK's AzureOpenAI
client on the deployment paths, a plain OpenAI client on the v1 paths; bodies still OpenAI's (by
its spec) with Azure's filter annotations; Azure's errors raised as the SDK's exception classes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import ValidationError

from llmsim.settings import Settings
from llmsim.surfaces import azure_openai
from tests.openai_spec import validate
from tests.servers import Server, run_server

KEY = "az-test-key-0123456789"
VERSION = "2024-10-21"
CHAT, EMB, INSTRUCT = "prod-chat", "prod-emb", "prod-instruct"
DEPLOYMENTS = f"{CHAT}=gpt-4o,{EMB}=text-embedding-3-small,{INSTRUCT}=gpt-3.5-turbo-instruct"
HELLO = [{"role": "user", "content": "Hello, how are you?"}]
SAFE = {"filtered": False, "severity": "safe"}
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with run_server(["--azure-deployments", DEPLOYMENTS, "--api-keys", KEY]) as server:
        yield server


@pytest.fixture(scope="module")
def azure(server: Server) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=server.url, api_key=KEY, api_version=VERSION, max_retries=0)


@pytest.fixture(scope="module")
def v1(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=KEY, max_retries=0)


def _deployment_url(server: Server, deployment: str, path: str = "chat/completions") -> str:
    return f"{server.url}/openai/deployments/{deployment}/{path}?api-version={VERSION}"


def _sse(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def _prompt_filtered(body: dict[str, Any]) -> None:
    (result,) = body["prompt_filter_results"]
    assert result["prompt_index"] == 0
    for category in ("hate", "self_harm", "sexual", "violence"):
        assert result["content_filter_results"][category] == SAFE


# --- the deployment paths, with the AzureOpenAI client ----------------------------------------------


def test_chat(azure: openai.AzureOpenAI, server: Server) -> None:
    response = azure.chat.completions.with_raw_response.create(model=CHAT, messages=HELLO)
    assert response.headers["apim-request-id"] == response.headers["x-request-id"]
    assert response.headers["x-llmsim-instance"]
    completion = response.parse()
    assert completion.model == "gpt-4o"  # the deployment's model
    assert completion.choices[0].message.content
    body = json.loads(response.text)
    validate("CreateChatCompletionResponse", body)  # Azure's extra fields are allowed
    _prompt_filtered(body)
    assert body["choices"][0]["content_filter_results"]["violence"] == SAFE
    assert completion.system_fingerprint  # the instance, as the chat surface stamps it


def test_chat_stream_starts_with_the_annotation_chunk(azure: openai.AzureOpenAI, server: Server) -> None:
    whole = azure.chat.completions.create(model=CHAT, messages=HELLO).choices[0].message.content
    chunks = list(azure.chat.completions.create(model=CHAT, messages=HELLO, stream=True))
    first = chunks[0]
    assert first.choices == [] and first.id == "" and first.model == "" and first.created == 0
    _prompt_filtered(first.model_dump())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert {c.model for c in chunks[1:]} == {"gpt-4o"}
    raw = [c.model_dump() for c in chunks if c.choices]
    role, *content, finish = raw
    assert role["choices"][0]["content_filter_results"] == {}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["choices"][0]["content_filter_results"] == {}
    assert content and all(c["choices"][0]["content_filter_results"]["hate"] == SAFE for c in content)


def test_body_model_is_ignored_on_a_deployment_path(server: Server) -> None:
    for body in ({"messages": HELLO}, {"model": "no-such-model", "messages": HELLO}):
        response = httpx.post(
            _deployment_url(server, CHAT), json=body, headers={"api-key": KEY}, timeout=TIMEOUT
        )
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "gpt-4o"


def test_embeddings(azure: openai.AzureOpenAI) -> None:
    response = azure.embeddings.with_raw_response.create(model=EMB, input=["a", "b"], encoding_format="float")
    result = response.parse()
    assert result.model == "text-embedding-3-small"
    assert [len(d.embedding) for d in result.data] == [1536, 1536]
    validate("CreateEmbeddingResponse", json.loads(response.text))


def test_completions(azure: openai.AzureOpenAI, server: Server) -> None:
    response = azure.completions.with_raw_response.create(model=INSTRUCT, prompt="Say this is a test")
    completion = response.parse()
    assert completion.model == "gpt-3.5-turbo-instruct"
    body = json.loads(response.text)
    validate("CreateCompletionResponse", body)
    _prompt_filtered(body)
    assert body["choices"][0]["content_filter_results"]["sexual"] == SAFE
    chunks = list(azure.completions.create(model=INSTRUCT, prompt="Say this is a test", stream=True))
    assert chunks[0].choices == []
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion.choices[0].text


# --- the v1 paths, with a plain OpenAI client (Authorization: Bearer) ----------------------------------


def test_v1_paths(v1: openai.OpenAI, server: Server) -> None:
    response = v1.chat.completions.with_raw_response.create(model=CHAT, messages=HELLO)
    body = json.loads(response.text)
    validate("CreateChatCompletionResponse", body)
    assert body["model"] == "gpt-4o"
    _prompt_filtered(body)
    chunks = list(v1.chat.completions.create(model=CHAT, messages=HELLO, stream=True))
    assert chunks[0].choices == [] and chunks[-1].choices[0].finish_reason == "stop"
    assert v1.embeddings.create(model=EMB, input="a").model == "text-embedding-3-small"
    assert v1.completions.create(model=INSTRUCT, prompt="hi").model == "gpt-3.5-turbo-instruct"


# --- errors ----------------------------------------------------------------------------------------


def test_missing_api_version_is_resource_not_found(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/openai/deployments/{CHAT}", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=CHAT, messages=HELLO)
    assert caught.value.body == {"code": "404", "message": "Resource not found"}


def test_unknown_deployment(server: Server, v1: openai.OpenAI) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=server.url, azure_deployment="gpt-4o", api_key=KEY, api_version=VERSION, max_retries=0
    )  # a served model, but not a deployment: the map lists the deployments
    for call in (
        lambda: client.chat.completions.create(model="x", messages=HELLO),
        lambda: client.embeddings.create(model="x", input="a"),
        lambda: v1.chat.completions.create(model="nope", messages=HELLO),
        lambda: v1.completions.create(model="nope", prompt="a"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.code == "DeploymentNotFound"
        assert "deployment for this resource does not exist" in caught.value.message


def test_keys(server: Server) -> None:
    wrong = openai.AzureOpenAI(azure_endpoint=server.url, api_key="wrong", api_version=VERSION, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model=CHAT, messages=HELLO)
    assert caught.value.body["code"] == "401"
    assert caught.value.body["message"].startswith("Access denied due to invalid subscription key")
    missing = httpx.post(_deployment_url(server, CHAT), json={"messages": HELLO}, timeout=TIMEOUT)
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("Access denied due to missing subscription key")
    bearer = httpx.post(
        _deployment_url(server, CHAT),
        json={"messages": HELLO},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=TIMEOUT,
    )
    assert bearer.status_code == 200


def test_rate_limit_fault_carries_azure_retry_headers(azure: openai.AzureOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        azure.chat.completions.create(
            model=CHAT, messages=HELLO, extra_headers={"x-llmsim-fault": "rate_limit"}
        )
    headers = caught.value.response.headers
    assert headers["retry-after"] == "1"
    assert headers["retry-after-ms"] == headers["x-ms-retry-after-ms"] == "1000"
    assert caught.value.body["code"] == "429"
    message = caught.value.body["message"]
    assert message.startswith(
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {VERSION}"
    )
    assert "Please retry after 1 second." in message


def test_openai_errors_stay_openai(server: Server) -> None:
    response = httpx.post(
        _deployment_url(server, CHAT), json={"messages": []}, headers={"api-key": KEY}, timeout=TIMEOUT
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_deployments_change_at_runtime(server: Server) -> None:
    def ask(deployment: str) -> int:
        headers = {"api-key": KEY}
        body = {"messages": HELLO}
        return httpx.post(
            _deployment_url(server, deployment), json=body, headers=headers, timeout=TIMEOUT
        ).status_code

    config = f"{server.url}/llmsim/config"
    refused = httpx.patch(config, json={"azure_deployments": "x=not-served"}, timeout=TIMEOUT)
    assert refused.status_code == 400 and "not one of --models" in refused.json()["error"]["message"]
    try:
        assert (
            httpx.patch(config, json={"azure_deployments": "fresh=gpt-4o"}, timeout=TIMEOUT).status_code
            == 200
        )
        assert (ask("fresh"), ask(CHAT)) == (200, 404)
    finally:
        httpx.patch(config, json={"azure_deployments": DEPLOYMENTS}, timeout=TIMEOUT).raise_for_status()
    assert (ask("fresh"), ask(CHAT)) == (404, 200)


# --- units -------------------------------------------------------------------------------------------


def test_with_model_appends_the_last_member() -> None:
    assert json.loads(azure_openai.with_model(b' {"model": "a", "n": 1} ', "b")) == {"model": "b", "n": 1}
    assert azure_openai.with_model(b"{ }", "b") == b'{"model":"b"}'
    assert azure_openai.with_model(b"[1]", "b") == b"[1]"
    assert azure_openai.with_model(b"not json", "b") == b"not json"


def test_deployment_setting() -> None:
    assert azure_openai.parse_deployments(" a = gpt-4o , b=gpt-4 ,") == {"a": "gpt-4o", "b": "gpt-4"}
    with pytest.raises(ValueError, match="name=model"):
        azure_openai.parse_deployments("a")
    with pytest.raises(ValidationError, match="not one of --models"):
        Settings(azure_deployments="a=unknown-model")
    assert Settings(azure_deployments="a=gpt-4o").azure_deployments == "a=gpt-4o"
