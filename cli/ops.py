"""What the ops commands share: the services and their settings, the HTTP client, times, errors.

Commands that work through a service's HTTP API open their client with `http_client` (tests point
`client_for` at the services in-process). Secrets (the admin token, API keys) are read from the
environment only, never from the command line (shell history, process lists), and never printed.
Commands that work on a service's database or topics directly build that service's own settings
(`services/<name>/settings.py`), so they read the very variables the service reads
(`PROFILE_DATABASE_URL`, `CLIENTELA_TOPIC_PREFIX`, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from enum import StrEnum
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console

from services.ingest.settings import IngestSettings
from services.profile.settings import ProfileSettings
from services.segmentation.settings import SegmentationSettings
from shared.settings import ServiceSettings

ADMIN_TOKEN_ENV = "CLIENTELA_ADMIN_TOKEN"  # noqa: S105 (the variable's name, not a token)
API_KEY_ENV = "CLIENTELA_API_KEY"
DEFAULT_URLS = {
    "ingest": "http://127.0.0.1:8001",
    "profile": "http://127.0.0.1:8002",
    "segmentation": "http://127.0.0.1:8003",
}


class Service(StrEnum):
    ingest = "ingest"
    profile = "profile"
    segmentation = "segmentation"


SETTINGS: dict[Service, type[ServiceSettings]] = {
    Service.ingest: IngestSettings,
    Service.profile: ProfileSettings,
    Service.segmentation: SegmentationSettings,
}


def service_settings(service: Service, **overrides: Any) -> ServiceSettings:
    """The service's settings from the environment, as the service itself would read them."""
    return SETTINGS[service](**overrides)


# -- output and errors -------------------------------------------------------------------------------------


def out() -> Console:
    """Results (tables, a new key): standard output, so they can be piped."""
    return Console()


def err() -> Console:
    """Messages and progress bars: standard error."""
    return Console(stderr=True)


def fail(message: str) -> NoReturn:
    """Stop with `message` and exit status 1."""
    err().print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


def secret_from_env(name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        fail(f"set {name} to {what} (it is read from the environment only)")
    return value


def parse_time(value: str, option: str) -> datetime:
    """An ISO 8601 time with its zone (`2026-11-20T10:00:00Z`, `...-03:00`); a naive one is refused, as the
    APIs refuse it."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("not an ISO 8601 time", param_hint=option) from None
    if parsed.tzinfo is None:
        raise typer.BadParameter("give the time zone, e.g. 2026-11-20T10:00:00Z or -03:00", param_hint=option)
    return parsed


# -- HTTP --------------------------------------------------------------------------------------------------


def _open_client(base_url: str) -> AbstractContextManager[httpx.Client]:
    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(30))


# base URL -> a client for it, used in a `with`. Tests replace it to reach the apps in-process.
client_for: Callable[[str], AbstractContextManager[httpx.Client]] = _open_client


def http_client(base_url: str) -> AbstractContextManager[httpx.Client]:
    """A client for the service at `base_url`, to use in a `with` (through `client_for`)."""
    return client_for(base_url)


def call(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    token: str,
    expect: tuple[int, ...],
    service: str,
    **kwargs: Any,
) -> httpx.Response:
    """A request with `token`; fails with a readable message unless the status is one of `expect`."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        response = client.request(method, path, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the {service} service at {client.base_url} ({type(exc).__name__})")
    if response.status_code not in expect:
        fail(f"the {service} service answered {response.status_code}: {problem_detail(response)}")
    return response


def problem_detail(response: httpx.Response) -> str:
    """The problem document's title, detail and field errors (which never echo submitted values)."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no detail"
    if not isinstance(body, dict):
        return response.reason_phrase or "no detail"
    text = str(body.get("detail") or body.get("title") or response.reason_phrase)
    errors = body.get("errors")
    if isinstance(errors, list):
        fields = [
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg', '')}"
            for e in errors
            if isinstance(e, dict)
        ]
        if fields:
            text += " (" + "; ".join(fields) + ")"
    return text
