"""``curation.core.redact``: the one recorded form of a URI, and free text scrubbed of credentials.

Pure tests (examples and Hypothesis properties), then the library's read path against a real
HTTP server on loopback that requires credentials: what a failed read says, and that the
credentials sent come from storage options, never from the recorded URI.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from curation.core.redact import (
    REDACTED,
    has_credentials,
    redact_uri,
    scrub,
    split_userinfo,
    uri_secrets,
)
from curation.ingest.sources import (
    SourceError,
    mirror_storage_options,
    option_secrets,
    parse_http_headers,
    read_raw,
)
from curation.ingest.upstream import is_transient
from curation.publish.alerts import redact_url
from tests.http_mirror import AuthMirror, basic

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.mark.parametrize(
    ("uri", "recorded"),
    [
        ("http://hhuser:hhsecret999@127.0.0.1:18090/A-hh", "http://127.0.0.1:18090/A-hh"),
        ("https://user@mirror.example/hh", "https://mirror.example/hh"),
        ("https://mirror.example/hh?token=abc&x=1", "https://mirror.example/hh"),
        (  # a presigned S3 URL: every parameter goes, not only the known secret ones
            "https://b.s3.amazonaws.com/k.jsonl?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIA%2F20240101&X-Amz-Signature=deadbeef",
            "https://b.s3.amazonaws.com/k.jsonl",
        ),
        ("https://h/x.json?sig=abc#access_token=xyz", "https://h/x.json"),
        ("s3://AKIAFAKEKEY:supersecret123@advbucket/curated", "s3://advbucket/curated"),
        # an AWS secret with a raw "/" (not percent-encoded) still counts as user info
        ("s3://AKIAFAKEKEY:abc/def+ghi@advbucket/curated", "s3://advbucket/curated"),
        ("s3://key:secret/only", f"s3://{REDACTED}/only"),  # no host to be found: all of it
        ("http://[::1]:8080/mirror?t=1", "http://[::1]:8080/mirror"),
        # nothing to remove: unchanged
        ("hf://datasets/Anthropic/hh-rlhf@0123abcd", "hf://datasets/Anthropic/hh-rlhf@0123abcd"),
        ("s3://bucket/prefix/refs.jsonl#prompt", "s3://bucket/prefix/refs.jsonl#prompt"),
        ("http://127.0.0.1:8080/a/b", "http://127.0.0.1:8080/a/b"),
        ("/data/mirror?odd@name", "/data/mirror?odd@name"),  # a local path is not a URI
        ("", ""),
    ],
)
def test_redact_uri(uri: str, recorded: str):
    assert redact_uri(uri) == recorded
    assert has_credentials(uri) is (uri != recorded)
    assert redact_uri(recorded) == recorded  # idempotent


def test_without_path_for_webhooks():
    url = "https://user:pw@hooks.slack.com/services/T/B/XoXbSeCrEt?x=1"
    assert redact_uri(url, keep_path=False) == "https://hooks.slack.com/..."
    assert redact_url(url) == "https://hooks.slack.com/..."  # alerts use the same function
    assert redact_url(None) == "<none>"
    assert redact_uri("not a url", keep_path=False) == "<not a URI>"


def test_scrub_finds_uris_and_explicit_secrets():
    text = (
        "ClientResponseError: 401, message='Unauthorized', "
        "url=URL('http://127.0.0.1:9/A-hh/x.jsonl.gz?token=s3cr3t-t0ken') "
        "sent header Bearer abcdef123456; user=ab"
    )
    out = scrub(text, ["abcdef123456", "ab"])
    assert "s3cr3t-t0ken" not in out and "abcdef123456" not in out
    assert "url=URL('http://127.0.0.1:9/A-hh/x.jsonl.gz')" in out
    assert out.endswith("user=ab")  # shorter than MIN_SECRET_LENGTH: left alone


def test_split_userinfo_is_basic_auth():
    bare, header = split_userinfo("http://a%40b:p%3Ass@127.0.0.1:8/x?q=1")
    assert bare == "http://127.0.0.1:8/x?q=1"
    assert base64.b64decode(header["Authorization"].removeprefix("Basic ")) == b"a@b:p:ss"
    assert split_userinfo("http://127.0.0.1:8/x") == ("http://127.0.0.1:8/x", {})


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1)
_SECRET = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N")), min_size=8).filter(
    lambda secret: REDACTED not in secret
)
_HOST = st.sampled_from(["127.0.0.1:8080", "mirror.example", "bucket", "[::1]:9000"])
_PATH = st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True), max_size=4)


@given(
    scheme=st.sampled_from(["http", "https", "s3", "gs", "file"]),
    user=_TEXT,
    password=_SECRET,
    host=_HOST,
    path=_PATH,
)
def test_user_info_never_survives(scheme, user, password, host, path):
    assume(password not in f"{scheme}://{host}/{'/'.join(path)}")  # a secret that is not one
    uri = f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}/{'/'.join(path)}"
    recorded = redact_uri(uri)
    assert recorded == f"{scheme}://{host}/{'/'.join(path)}"
    assert password not in recorded
    message = f"cannot read {uri}: 401 for {password!r} (user {user})"
    scrubbed = scrub(message, uri_secrets(uri))
    assert password not in scrubbed and quote(password, safe="") not in scrubbed


@given(
    host=_HOST,
    path=_PATH,
    params=st.lists(
        st.tuples(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True), _SECRET),
        min_size=1,
        max_size=4,
    ),
)
def test_query_values_never_survive(host, path, params):
    assume(all(value not in f"https://{host}/{'/'.join(path)}" for _, value in params))
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params)
    uri = f"https://{host}/{'/'.join(path)}?{query}"
    recorded = redact_uri(uri)
    assert recorded == f"https://{host}/{'/'.join(path)}"
    scrubbed = scrub(f"error at {uri} with {params[0][1]}", uri_secrets(uri))
    assert all(value not in recorded and value not in scrubbed for _, value in params)


@given(_TEXT)
def test_redact_never_raises(text):
    assert isinstance(redact_uri(text), str)
    assert isinstance(redact_uri(f"http://{text}", keep_path=False), str)
    assert not has_credentials(redact_uri(f"https://{text}"))


def test_http_headers_variable():
    assert parse_http_headers(None) == {}
    assert parse_http_headers('{"Authorization": "Bearer x"}') == {"Authorization": "Bearer x"}
    for bad in ('{"Authorization": Bearer topsecret-value}', '["Bearer topsecret-value"]'):
        with pytest.raises(ValueError, match="SOURCES_HTTP_HEADERS") as info:
            parse_http_headers(bad)
        assert "topsecret-value" not in str(info.value)


def test_mirror_options_match_only_their_mirror():
    configured = ["http://u:pw-secret@127.0.0.1:8/hh", "http://127.0.0.1:8/pku?token=t0k3n"]
    hh = mirror_storage_options("http://127.0.0.1:8/hh/a/train.jsonl.gz", configured)
    assert hh == {
        "headers": {"Authorization": "Basic " + base64.b64encode(b"u:pw-secret").decode()}
    }
    pku = mirror_storage_options("http://127.0.0.1:8/pku/data/x.jsonl", configured)
    assert pku == {"params": [("token", "t0k3n")]}
    assert mirror_storage_options("http://127.0.0.1:8/hhh/x", configured) == {}  # not a prefix
    with_env = mirror_storage_options("http://127.0.0.1:8/hh", configured, '{"X-Key": "k3y-v"}')
    assert with_env["headers"]["X-Key"] == "k3y-v" and "Authorization" in with_env["headers"]
    assert {"pw-secret", "k3y-v", "u"} <= set(option_secrets(with_env))
    s3 = mirror_storage_options("s3://bucket/hh/x.jsonl", ["s3://AK:se%2Fcret@bucket/hh"])
    assert s3 == {"key": "AK", "secret": "se/cret"}
    with pytest.raises(SourceError, match=r"^hf://datasets/a/b: credentials in a hf://") as info:
        mirror_storage_options("hf://datasets/a/b", ["hf://datasets/a/b?token=hf-secret"])
    assert "hf-secret" not in str(info.value)


# --- reading from a real HTTP server that requires credentials ---------------------------------


PASSWORD, TOKEN = "pw-Zq81xV7rTt", "tok-9fKd02LmQw"


@pytest.fixture
def auth_mirror(tmp_path: Path) -> Iterator[AuthMirror]:
    shutil.copytree(SAMPLE / "hh-rlhf", tmp_path / "www" / "hh")
    mirror = AuthMirror(tmp_path / "www", [basic("reader", PASSWORD)], [TOKEN])
    yield mirror
    mirror.close()


FILE = "hh/harmless-base/test.jsonl.gz"


def test_reads_with_credentials_from_options(auth_mirror: AuthMirror):
    configured = [f"http://reader:{PASSWORD}@{auth_mirror.url[7:]}/hh"]
    uri = f"{auth_mirror.url}/{FILE}"
    raw = read_raw(uri, mirror_storage_options(uri, configured))
    assert raw is not None and raw.uri == uri
    assert raw.raw == (SAMPLE / "hh-rlhf" / "harmless-base" / "test.jsonl.gz").read_bytes()
    token_uri = f"{auth_mirror.url}/hh?token={TOKEN}"
    assert read_raw(uri, mirror_storage_options(uri, [token_uri])) is not None
    assert auth_mirror.refused == []


@pytest.mark.parametrize(("status", "transient"), [(403, False), (503, True)])
def test_a_failed_read_names_the_file_not_the_credentials(
    auth_mirror: AuthMirror, status: int, transient: bool
):
    auth_mirror.failing[f"/{FILE}"] = status
    uri = f"{auth_mirror.url}/{FILE}"
    with pytest.raises(SourceError) as info:
        read_raw(uri, mirror_storage_options(uri, [f"{auth_mirror.url}/hh?token={TOKEN}"]))
    error = info.value
    assert str(error).startswith(f"{uri}: cannot read: ")
    assert str(status) in str(error)
    assert TOKEN not in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # no unscrubbed chain
    assert is_transient(error) is transient
