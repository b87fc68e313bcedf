"""Credentials never leave the process: the form of a URI that may be recorded, and free text
scrubbed of URIs and secrets.

A URI may carry credentials in its user info (``https://user:pass@host/...``,
``s3://KEY:SECRET@bucket/...``), its query string (``?token=...``, ``access_token``, ``sig``,
a presigned URL's ``X-Amz-Credential`` and ``X-Amz-Signature``) or its fragment
(``#access_token=...``). :func:`redact_uri` is the one form of a URI that may be logged,
printed, tagged, put in metadata, a stage table or a release: user info, query string and any
fragment that is not a plain name are dropped (all of them, not a list of known parameter
names: a list is never complete). :func:`scrub` does the same to free text such as an exception
message, and removes secrets given explicitly (a password, a header value).

Reading may still use the credentials: :func:`split_userinfo` turns user info into the
``Authorization: Basic`` header that HTTP clients send (``curation.ingest.sources`` and
``curation.publish.alerts`` do so); only the redacted form is ever recorded.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote

#: What replaces a secret found in free text.
REDACTED = "REDACTED"
#: Explicit secrets shorter than this are not searched for in free text (a two-letter password
#: would redact ordinary words); a URI carrying them is still redacted as a whole.
MIN_SECRET_LENGTH = 4

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: A URI inside free text: a scheme, ``://``, then up to white space or a quote.
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_PLAIN_FRAGMENT = re.compile(r"^[\w.-]*$")
_PORT = re.compile(r"^\d*$")


def _parts(uri: str) -> tuple[str, str, str, str, str, str] | None:
    """``(scheme, userinfo, host, path, query, fragment)`` of a ``scheme://`` URI, else None.

    Unlike ``urllib.parse`` it never raises, and it treats as user info a ``user:password``
    whose password holds a raw ``/`` (``s3://KEY:abc/def@bucket/x``: an AWS secret pasted
    without percent-encoding), where the authority would otherwise end at that ``/``.
    """
    match = _SCHEME.match(uri)
    if not match:
        return None
    scheme, rest = match.group(1), uri[match.end() :]
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    userinfo, at, host = authority.rpartition("@")
    if not at and _bad_port(authority):
        # "user:pass" then a raw "/" in the password: the host is after the next "@"
        head, at, tail = rest.partition("@")
        userinfo = head if at else authority  # no host to be found: all of it may be secret
        if at:
            slash = tail.find("/")
            host, path = (tail, "") if slash < 0 else (tail[:slash], tail[slash:])
    if _bad_port(host):  # never show what may be part of a password
        host = REDACTED
    return scheme, userinfo, host, path, query, fragment


def _bad_port(host: str) -> bool:
    """Whether ``host`` ends in ``:<something that is not a port>`` (IPv6 literals aside)."""
    _, colon, port = host.rpartition(":")
    return bool(colon) and not host.endswith("]") and not _PORT.match(port)


def redact_uri(uri: str, *, keep_path: bool = True) -> str:
    """``uri`` as it may be recorded: no user info, no query string, no fragment unless it is a
    plain name (``refs.jsonl#prompt`` keeps ``#prompt``).

    ``keep_path=False`` also hides the path (``scheme://host[:port]/...``), for URIs whose path
    is the secret (a Slack webhook). A string without ``scheme://`` (a local path) is returned
    unchanged when the path is kept. Never raises.
    """
    parts = _parts(uri)
    if parts is None:
        return uri if keep_path else "<not a URI>"
    scheme, _, host, path, _, fragment = parts
    if not keep_path:
        return f"{scheme}://{host}/..."
    tail = f"#{fragment}" if fragment and _PLAIN_FRAGMENT.match(fragment) else ""
    return f"{scheme}://{host}{path}{tail}"


def has_credentials(uri: str) -> bool:
    """Whether ``uri`` carries something :func:`redact_uri` removes (user info, query string, a
    fragment that is not a plain name)."""
    return redact_uri(uri) != uri


def uri_secrets(uri: str, *, path_is_secret: bool = False) -> list[str]:
    """The pieces of ``uri`` that :func:`redact_uri` removes, as they may appear in free text:
    user info, user name, password, the query string and each of its values (as written and
    percent-decoded); with ``path_is_secret`` also the path and each long path segment."""
    parts = _parts(uri)
    if parts is None:
        return []
    _, userinfo, _, path, query, fragment = parts
    user, _, password = userinfo.partition(":")
    pieces = [userinfo, user, password, query]
    pieces += [value for _, value in parse_qsl(query, keep_blank_values=True)]
    pieces += [value for pair in query.split("&") for value in pair.split("=")[1:]]
    if fragment and not _PLAIN_FRAGMENT.match(fragment):
        pieces.append(fragment)
    if path_is_secret:
        pieces.append(path)
        pieces += [segment for segment in path.split("/") if len(segment) >= 12]
    pieces += [unquote(piece) for piece in pieces]
    return sorted({p for p in pieces if p}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every ``scheme://`` URI in it redacted (:func:`redact_uri`) and every one of
    ``secrets`` (at least :data:`MIN_SECRET_LENGTH` characters) replaced by ``REDACTED``."""
    text = _URI_IN_TEXT.sub(lambda match: redact_uri(match.group(0)), text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


def split_userinfo(uri: str) -> tuple[str, dict[str, str]]:
    """``scheme://user:pass@host/path?q`` -> (``scheme://host/path?q``, an ``Authorization:
    Basic`` header); ``(uri, {})`` without user info.

    Clients that do not take credentials from the URL (urllib) or should not see them (anything
    that may quote the URL in an error) get them as the standard header instead.
    """
    parts = _parts(uri)
    if parts is None or not parts[1]:
        return uri, {}
    scheme, userinfo, host, path, query, fragment = parts
    bare = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    bare += f"#{fragment}" if fragment else ""
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return bare, {"Authorization": f"Basic {token}"}


def userinfo(uri: str) -> tuple[str, str]:
    """The percent-decoded ``(user, password)`` of ``uri`` (empty strings when absent)."""
    parts = _parts(uri)
    user, _, password = (parts[1] if parts else "").partition(":")
    return unquote(user), unquote(password)


def query_params(uri: str) -> list[tuple[str, str]]:
    """The query string of ``uri`` as decoded ``(name, value)`` pairs, in order."""
    parts = _parts(uri)
    return parse_qsl(parts[4], keep_blank_values=True) if parts else []
