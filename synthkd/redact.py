"""Keep secrets out of everything synthkd shows or writes: messages, dataset cards, run.json, logs.

Two sources of secrets are known: the parts of a URL that carry credentials (`user:password@`, the
query string) and the values the pipeline loader expanded from `${env:VAR}` in a secret-looking
place (a URL, a key, a token), plus the API keys the client reads. The latter are registered here
once, process-wide, and every writer scrubs its text through `scrub` (or a URL through `redact_url`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# A name that says its value is secret: config keys (api_key_env, base_url) and variable names (OPENAI_API_KEY);
# not max_tokens or an author column.
SECRET_NAME = re.compile(r"url|key|token(?!s)|secret|passw|auth(?!or)|credential", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`\\]+")
_TRAILING = ".,;:)]}"
_MIN_SECRET = 4  # shorter values would turn ordinary words of a message into labels

_secrets: dict[str, str] = {}  # secret value -> what is shown instead


def register_secret(value: str, label: str) -> None:
    """From now on, show `label` wherever `value` would appear (values under 4 characters, and numbers such
    as a port, are no secrets: replacing them would garble every message that holds the same digits)."""
    if len(value) >= _MIN_SECRET and not value.isdigit() and value != label:
        _secrets[value] = label


def _replace_registered(text: str) -> str:
    # Longest first, so a secret that contains another is replaced whole.
    for value in sorted(_secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, _secrets[value])
    return text


def redact_url(url: str) -> str:
    """The URL as it may be shown: userinfo -> `***@`, query -> `?***` (fragment too), `${env:}` parts as written."""
    url = _replace_registered(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 host: show nothing that could be a credential
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    hidden = lambda part: "***" if part else ""  # noqa: E731
    return urlunsplit((parts.scheme, netloc, parts.path, hidden(parts.query), hidden(parts.fragment)))


def scrub(text: str) -> str:
    """`text` with every URL in it redacted and every registered secret replaced by its label."""
    def one(m: re.Match[str]) -> str:
        url = m.group(0)
        core = url.rstrip(_TRAILING)
        return redact_url(core) + url[len(core):]

    return _URL.sub(one, _replace_registered(text))


def scrub_strings(obj: Any) -> Any:
    """A copy of a JSON-like value with `scrub` applied to every string in it (keys included)."""
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {scrub_strings(k): scrub_strings(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_strings(v) for v in obj]
    return obj
