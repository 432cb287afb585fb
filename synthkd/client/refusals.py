"""What synthkd tells the user about an endpoint that refuses it: the run-stopping errors (bad key, no credit,
wrong URL or model, redirects) with the fix that fits how the endpoint is set up, and the short forms of HTTP
errors that failed rows carry."""

from __future__ import annotations

import urllib.parse

import openai

from synthkd.config.endpoints import EndpointConfig
from synthkd.errors import EndpointError
from synthkd.redact import redact_url


def refused_error(name: str, config: EndpointConfig, exc: openai.APIStatusError) -> EndpointError:
    """The run-stopping error for a status that `stops_run`, with the fix that fits how the endpoint is set up."""
    code = exc.status_code
    if 300 <= code < 400:
        request = getattr(exc.response, "request", None)
        target = urllib.parse.urljoin(str(getattr(request, "url", "")), exc.response.headers.get("location", ""))
        return redirect_error(name, code, target)
    what = f"endpoint {name!r} refused the request ({code}): {short_error(exc)}"
    if code == 402:
        return EndpointError(what, where=f"endpoints.{name}",
                             fix="the account behind the key has no credit left: add credit, or use another key")
    if code in (405, 501):
        return EndpointError(what, where=f"endpoints.{name}.base_url", fix=NOT_THE_API_FIX)
    if code == 404:
        return EndpointError(what, where=f"endpoints.{name}",
                             fix=f"check base_url and model ({config.model!r}): the server must serve that model at that URL")
    if config.api_key_env is None:
        return EndpointError(
            f"{what}; the endpoint sends no API key (it has no api_key_env)",
            where=f"endpoints.{name}",
            fix="set `api_key_env:` on the endpoint to the name of the environment variable holding the key "
            "(e.g. api_key_env: OPENAI_API_KEY) and export that variable",
        )
    return EndpointError(what, where=f"endpoints.{name}.api_key_env",
                         fix=f"check that ${config.api_key_env} holds a valid key for this base_url and model")


NOT_THE_API_FIX = ("base_url must be the root of an OpenAI-compatible API (it usually ends in /v1, "
                   "e.g. http://localhost:8000/v1), not a web page or another path")


def redirect_error(name: str, code: int, target: str) -> EndpointError:
    """The run-stopping error for an endpoint that answers with a redirect (never followed: the key stays here)."""
    return EndpointError(
        f"endpoint {name!r} answered with a redirect ({code}) to {redact_url(target)}; synthkd does not follow "
        "redirects, so the API key is never sent to another host", where=f"endpoints.{name}.base_url",
        fix="set base_url to the URL the API answers at itself")


def error_kind(exc: BaseException) -> str:
    """What failed, in a word for a failure reason (`gave_up:<kind>`): timeout, connection, the status, or the type."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        return str(exc.status_code)
    return type(exc).__name__


def short_error(exc: BaseException) -> str:
    """The first line of an error's message (at most 300 characters), for a failed row's detail or a message."""
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
