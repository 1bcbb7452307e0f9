"""The control API never reads a file a client names, a PATCH is all or nothing, errors never
quote a file or a secret; the operator's files are safe to read at startup (issue 10)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmsim.settings import FILE_SETTINGS, RELOADABLE_SETTINGS, RUNTIME_SETTINGS, SECRET_SETTINGS, Settings
from tests.servers import Server, run_server

# A secret that must never come back in any answer or error: file contents are written with it.
MARKER = f"canary-{uuid.uuid4().hex}"
TIMEOUT = 10.0  # a request that hangs fails the test instead of blocking it


def config_url(server: Server) -> str:
    return f"{server.url}/llmsim/config"


def patch(server: Server, body: object, **kwargs) -> httpx.Response:
    return httpx.patch(config_url(server), json=body, timeout=TIMEOUT, **kwargs)


def chat(server: Server, text: str = "hello", headers: dict | None = None) -> httpx.Response:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=TIMEOUT)


def answer(server: Server, text: str = "hello") -> str:
    response = chat(server, text)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def assert_refused(response: httpx.Response, param: str | None) -> dict:
    """A 400 in OpenAI's envelope that quotes nothing of the canary files."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert MARKER not in response.text
    return error


def startup_failure(args: list[str], env: dict[str, str] | None = None) -> str:
    """What `llmsim serve` printed before exiting (run_server raises when the server exits)."""
    with pytest.raises(RuntimeError) as info, run_server(args, env=env):
        pass
    return str(info.value)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file an attacker would like to read: a .env with a key."""
    path = tmp_path / "secrets.env"
    path.write_text(f"API_KEY={MARKER}\n{MARKER}: {MARKER}\n")
    return path


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.fixture(scope="module")
def plain() -> Iterator[Server]:
    with run_server(["--instance-id", "control-api"]) as server:
        yield server


# --- the declaration ------------------------------------------------------------------------------


def test_what_may_change_is_declared_once_on_the_settings() -> None:
    assert {"failure_rate", "itl", "profile", "script_rules", "api_keys"} <= RUNTIME_SETTINGS
    assert {"script", "profiles", "api_keys_file", "admin_token_file", "config"} <= FILE_SETTINGS
    assert {"script", "profiles", "api_keys_file"} == RELOADABLE_SETTINGS
    assert not RUNTIME_SETTINGS & FILE_SETTINGS
    assert not {"port", "models", "admin_token", "control_access", "max_concurrency"} & RUNTIME_SETTINGS
    assert {"admin_token", "api_keys"} <= SECRET_SETTINGS
    assert set(Settings.model_fields) >= RUNTIME_SETTINGS


# --- a client never names a file ------------------------------------------------------------------


def test_file_settings_are_refused_at_runtime_without_reading(
    plain: Server, secret_file: Path, fifo: Path
) -> None:
    before = httpx.get(config_url(plain)).json()
    for name in ("profiles", "script", "api_keys_file", "admin_token_file", "config"):
        for path in (secret_file, fifo, Path("/dev/zero")):
            error = assert_refused(patch(plain, {name: str(path)}), name)  # a fifo would hang a read
            assert "only the operator chooses files" in error["message"]
    # With other settings in the same PATCH: nothing of it applies.
    assert_refused(patch(plain, {"failure_rate": 1.0, "api_keys_file": str(secret_file)}), "api_keys_file")
    assert httpx.get(config_url(plain)).json() == before
    assert chat(plain).status_code == 200  # no key from the file became required (or valid)


def test_unknown_and_fixed_settings_are_refused(plain: Server) -> None:
    assert_refused(patch(plain, {"nope": 1}), "nope")
    for name, value in (("port", 1), ("models", "a,b"), ("admin_token", "x"), ("control_access", "off")):
        assert "cannot be changed at runtime" in assert_refused(patch(plain, {name: value}), name)["message"]


# --- all or nothing -------------------------------------------------------------------------------


def test_a_rejected_patch_changes_nothing_and_later_ones_work(plain: Server) -> None:
    before = httpx.get(config_url(plain)).json()
    # Refused before anything is built, after validation, and while building (unknown profile).
    assert_refused(patch(plain, {"failure_rate": 1.0, "profiles": "/nonexistent"}), "profiles")
    assert_refused(patch(plain, {"failure_rate": 1.0, "itl": -1}), "itl")
    assert_refused(patch(plain, {"failure_rate": 1.0, "profile": "no-such-profile"}), None)
    assert httpx.get(config_url(plain)).json() == before
    assert chat(plain).status_code == 200
    try:
        applied = patch(plain, {"failure_rate": 1.0, "failure_types": "bad_gateway"})
        assert applied.status_code == 200 and applied.json()["failure_rate"] == 1.0
        assert chat(plain).status_code == 502
    finally:
        assert patch(plain, {"failure_rate": 0.0, "failure_types": None}).status_code == 200
    assert chat(plain).status_code == 200


def test_a_broken_file_on_reload_is_a_400_and_keeps_the_old_state(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles:\n  quick: {itl: 1}\n")
    with run_server(["--profiles", str(profiles)]) as server:
        before = httpx.get(config_url(server)).json()
        profiles.write_text(f"profiles: [\n  {MARKER}: {{\n")  # broken YAML holding the canary
        error = assert_refused(patch(server, {"itl": 5, "profiles": str(profiles)}), None)
        assert error["message"].startswith(f"{profiles}: not valid YAML at line ")
        profiles.write_text(f"profiles:\n  {MARKER}: {{itl: -1}}\n")  # valid YAML, invalid profile
        error = assert_refused(patch(server, {"itl": 5, "profiles": str(profiles)}), None)
        assert (
            error["message"] == f"{profiles}: profiles[key 1].itl: Input should be greater than or equal to 0"
        )
        assert httpx.get(config_url(server)).json() == before
        assert patch(server, {"profile": "quick"}).status_code == 200  # still loaded
        profiles.write_text("profiles:\n  brisk: {itl: 2}\n")
        assert patch(server, {"profiles": str(profiles), "profile": "brisk"}).status_code == 200


# --- what a client may do instead -----------------------------------------------------------------


def test_reload_the_operators_files_and_send_rules_inline(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text("default: {text: one}\n")
    keys = tmp_path / "keys.txt"
    keys.write_text("k-one\n")
    args = ["--response-mode", "script", "--script", str(script), "--api-keys-file", str(keys)]
    with run_server(args) as server:
        auth = {"authorization": "Bearer k-one"}

        def said(text: str = "hello", headers: dict = auth) -> str:
            response = chat(server, text, headers)
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["message"]["content"]

        assert said() == "one"
        script.write_text("default: {text: two}\n")
        assert patch(server, {"script": str(script)}).status_code == 200  # reloaded before the answer
        assert said() == "two"

        rules = {"rules": [{"message": "weather", "text": "sunny"}], "default": {"text": "inline"}}
        assert patch(server, {"script_rules": rules}).json()["script_rules"] == rules
        assert (said("the weather?"), said()) == ("sunny", "inline")
        bad = patch(server, {"script_rules": {"rules": [{"message": "(", "text": "x"}]}})
        assert (
            "rules[0].message: not a valid regular expression"
            in assert_refused(bad, "script_rules")["message"]
        )
        huge = {"default": {"text": "x" * 70_000}}
        assert "64 KiB" in assert_refused(patch(server, {"script_rules": huge}), "script_rules")["message"]
        assert said() == "inline"
        assert patch(server, {"script_rules": None}).status_code == 200  # back to the file
        assert said() == "two"

        keys.write_text("k-two\n")
        assert patch(server, {"api_keys_file": str(keys)}).status_code == 200
        assert chat(server, headers=auth).status_code == 401
        assert said(headers={"authorization": "Bearer k-two"}) == "two"


def test_inline_rules_on_an_instance_without_a_script(plain: Server) -> None:
    try:
        patched = patch(plain, {"response_mode": "script", "script_rules": {"default": {"text": "hi"}}})
        assert patched.status_code == 200
        assert answer(plain) == "hi"
        assert_refused(patch(plain, {"script_rules": None}), None)  # script mode needs rules
    finally:
        assert patch(plain, {"response_mode": "echo", "script_rules": None}).status_code == 200


# --- the operator's files at startup --------------------------------------------------------------


def test_broken_files_at_startup_give_one_sentence_without_content(tmp_path: Path, secret_file: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"profiles:\n  fast: {{itl: 1\n  {MARKER}: [\n")
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{MARKER} org project tier extra\n")
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"API_KEY={MARKER}\n")  # YAML reads it as one string
    for args, expected in (
        (["--profiles", str(broken)], f"llmsim: {broken}: not valid YAML at line "),
        (["--profiles", str(secret_file)], f"llmsim: {secret_file}: not valid YAML at line 2, column "),
        (["--profiles", str(dotenv)], f"llmsim: {dotenv}: the profiles file should be a mapping"),
        (["--api-keys-file", str(keys)], f"llmsim: {keys}:1: expected 'key [org [project [tier]]]'"),
        (["--response-mode", "script", "--script", str(secret_file)], f"llmsim: {secret_file}: "),
    ):
        output = startup_failure(args)
        assert expected in output and MARKER not in output and "Traceback" not in output, output


def test_fifos_and_devices_are_refused_at_startup(fifo: Path) -> None:
    for args, env in (
        (["--profiles", str(fifo)], None),
        (["--api-keys-file", "/dev/zero"], None),
        (["--response-mode", "script", "--script", "/dev/zero"], None),
        (["--admin-token-file", str(fifo)], None),
        ([], {"LLMSIM_CONFIG": str(fifo)}),
    ):
        output = startup_failure(args, env)  # no hang on the fifo, no endless read of /dev/zero
        assert "must be a regular file" in output and "Traceback" not in output, output


def test_a_file_over_the_size_bound_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 120_000)  # 1.2 MB
    output = startup_failure(["--profiles", str(big)])
    assert f"{big}: the profiles file is larger than 1024 KiB" in output


# --- who may call ---------------------------------------------------------------------------------


def test_a_non_ascii_admin_token_from_a_file(tmp_path: Path) -> None:
    token = f"pässwörd-✓-{MARKER}"
    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n", encoding="utf-8")
    with run_server(["--admin-token-file", str(token_file), "--control-access", "token"]) as server:
        right = {"authorization": b"Bearer " + token.encode("utf-8")}
        wrong = {"authorization": b"Bearer " + token.encode("utf-8")[:-1]}
        assert httpx.get(config_url(server), timeout=TIMEOUT).status_code == 401  # loopback is not enough
        assert httpx.get(config_url(server), headers=wrong, timeout=TIMEOUT).status_code == 401
        got = httpx.get(config_url(server), headers=right, timeout=TIMEOUT)
        assert got.status_code == 200 and got.json()["admin_token"] == "***" and MARKER not in got.text
        assert patch(server, {"itl": 1}, headers=right).status_code == 200


def test_a_non_ascii_admin_token_from_the_environment() -> None:
    token = "jeton-ünïcødé"
    with run_server([], env={"LLMSIM_ADMIN_TOKEN": token}) as server:
        right = {"authorization": b"Bearer " + token.encode("utf-8")}
        assert httpx.get(f"{server.url}/llmsim/stats", headers=right, timeout=TIMEOUT).status_code == 200
        assert httpx.get(f"{server.url}/llmsim/stats", timeout=TIMEOUT).status_code == 401


def test_control_access_off_and_token_without_a_token() -> None:
    with run_server(["--control-access", "off"]) as server:
        for method, path in (
            ("GET", "/llmsim/config"),
            ("PATCH", "/llmsim/config"),
            ("POST", "/llmsim/reset"),
        ):
            response = httpx.request(method, f"{server.url}{path}", json={}, timeout=TIMEOUT)
            assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
        assert httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).status_code == 200
    output = startup_failure(["--control-access", "token"])
    assert "--control-access token needs --admin-token" in output
