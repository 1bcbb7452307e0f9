"""llmsim.auth: key loading, masking and the OpenAI 401s."""

from __future__ import annotations

import pytest

from llmsim.auth import Authenticator, KeyInfo, load_keys, mask
from llmsim.errors import APIError
from tests.openai_spec import rendered

KEY = "sk-abcdefghijklmnopqrstuvwxyz"


def test_mask_keeps_only_the_ends() -> None:
    assert mask(KEY) == "sk-abcde" + "*" * (len(KEY) - 12) + "wxyz"
    assert mask("k1") == "**"
    assert mask("secret-key") == "se******ey"
    assert len(mask(KEY)) == len(KEY)
    assert KEY not in repr(KeyInfo(KEY, "org-1"))


def test_load_keys_from_list_and_file(tmp_path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# key org project tier\n\nk-file org-a proj-a tier-1\nk-plain   # a comment\nk1 org-b\n")
    keys = load_keys([" k1 ", "", "k2"], path)
    assert keys == {
        "k1": KeyInfo("k1", "org-b"),  # the file's entry wins
        "k2": KeyInfo("k2"),
        "k-file": KeyInfo("k-file", "org-a", "proj-a", "tier-1"),
        "k-plain": KeyInfo("k-plain"),
    }
    path.write_text("k a b c d\n")
    with pytest.raises(ValueError, match=":1:"):
        load_keys([], path)


def test_auth_off_without_keys() -> None:
    assert Authenticator({}).check([]) is None


@pytest.mark.parametrize(
    "headers",
    [
        [(b"authorization", KEY.encode().join([b"Bearer ", b""]))],
        [(b"authorization", b"bearer  " + KEY.encode())],
        [(b"x-api-key", KEY.encode())],
        [(b"x-api-key", b"wrong"), (b"authorization", b"Bearer " + KEY.encode())],
    ],
)
def test_valid_keys(headers) -> None:
    auth = Authenticator(load_keys([KEY]))
    assert auth.check(headers) == KeyInfo(KEY)


@pytest.mark.parametrize(
    "headers",
    [[], [(b"authorization", b"Bearer ")], [(b"authorization", b"Basic abc")], [(b"x-api-key", b"")]],
)
def test_missing_key(headers) -> None:
    with pytest.raises(APIError) as info:
        Authenticator(load_keys([KEY])).check(headers)
    status, error, _ = rendered(info.value)
    assert (status, error["code"], error["type"]) == (401, None, "invalid_request_error")
    assert error["message"].startswith("You didn't provide an API key.")


def test_wrong_key_is_masked() -> None:
    wrong = "sk-proj-0123456789abcdefWXYZ"
    with pytest.raises(APIError) as info:
        Authenticator(load_keys([KEY])).check([(b"authorization", b"Bearer " + wrong.encode())])
    status, error, _ = rendered(info.value)
    assert (status, error["code"], error["type"]) == (401, "invalid_api_key", "invalid_request_error")
    assert error["message"] == (
        "Incorrect API key provided: sk-proj-****************WXYZ. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    assert wrong not in error["message"]
