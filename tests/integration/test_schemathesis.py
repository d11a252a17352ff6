"""Schemathesis against each service's own OpenAPI, with its default checks: every built-in check (server
errors, status codes, content types, response schemas and headers, negative and positive data, ignored
auth, missing headers, unsupported methods and `Allow`, use after free, resource availability, ...).

Each service runs in process (the `stack` fixture: API, consumers and relays on the test Kafka and
PostgreSQL). Schemathesis fetches `/openapi.json` from the app and runs its engine as the CLI does (the
examples, coverage, fuzzing and stateful phases), with a real tenant API key (the admin token for
`POST /v1/tenants`). Generation is seeded and deterministic. Each distinct failure is reported with its
operation, check and a `curl` to reproduce it; an operation left untested fails the test too.

Where a check cannot hold for an operation, it is turned off for that operation only, with the reason:
`EXCLUDED_CHECKS` below.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest
import schemathesis
from schemathesis.core.result import Ok
from schemathesis.engine import Status, events
from schemathesis.generation.meta import CoveragePhaseData
from schemathesis.python import asgi
from schemathesis.specs.openapi.schemas import OpenApiSchema

from services.ingest.api import IDEMPOTENCY_KEY
from tests.support import ADMIN_TOKEN, Stack

pytestmark = pytest.mark.integration

# -- exclusions ----------------------------------------------------------------------------------------------

# Checks that do not apply to one operation (its label, `METHOD /path`), and why. Keep this short: each entry
# is a hole in the proof. `positive_data_acceptance` wants every request the schema allows to succeed; it
# cannot hold where the service checks what JSON Schema cannot say (and answers 422, as it should).
IDENTIFIERS = (
    "identifiers are checked beyond their form (CPF/CNPJ check digits, phone numbers against the numbering "
    "plan, e-mail domains)"
)
RULE = (
    "in a segment rule the operator depends on the field, and the value on both (form, kind, bounds, "
    "choices): `rules.parse_rule` checks it, the Condition schema says it in words"
)
WEBHOOK_URL = "the URL's host must resolve (DNS, at registration) to addresses that may be called"
BATCH = "a batch answers 200 with a result per item: an invalid item is rejected in its result"
EXCLUDED_CHECKS: dict[str, dict[str, dict[str, str]]] = {
    "ingest": {
        "POST /v1/orders": {
            "positive_data_acceptance": f"the customer needs an identifier, and {IDENTIFIERS}"
        },
        "POST /v1/customers": {
            "positive_data_acceptance": f"a customer needs an identifier, and {IDENTIFIERS}"
        },
        "POST /v1/events": {"positive_data_acceptance": IDENTIFIERS},
        "POST /v1/orders:batch": {"negative_data_rejection": BATCH},
        "POST /v1/customers:batch": {"negative_data_rejection": BATCH},
        "POST /v1/events:batch": {"negative_data_rejection": BATCH},
        "POST /v1/sources/{source}/orders": {
            "positive_data_acceptance": "the body is a marketplace's own order JSON, read by its adapter"
        },
        "POST /v1/imports": {
            "positive_data_acceptance": "the number and names of the files depend on `format` (Olist: tables)"
        },
        "POST /v1/api-keys": {"positive_data_acceptance": "`expires_at` must be in the future"},
        "GET /v1/api-keys": {
            "positive_data_acceptance": "`cursor` must be the id of one of the tenant's keys"
        },
        "GET /v1/api-keys/{key_id}": {
            "use_after_free": "DELETE revokes a key; its record stays readable (status `revoked`, "
            "`revoked_at`) so that the tenant can see which keys existed and when they stopped working"
        },
    },
    "profile": {
        "GET /v1/profiles": {
            "positive_data_acceptance": f"lookups are by identifier and {IDENTIFIERS}; `source` goes with "
            "`external_id`"
        },
        "POST /v1/privacy/requests": {
            "positive_data_acceptance": f"the subject is one identifier and {IDENTIFIERS}; `correction` and "
            "`purposes` go with their request types"
        },
        "PUT /v1/identity-rules": {
            "positive_data_acceptance": "`suggest_threshold` must not exceed `merge_threshold`, `priority` "
            "lists every kind once, `limits.document` is 1"
        },
    },
    "segmentation": {
        "POST /v1/segments": {"positive_data_acceptance": RULE},
        "POST /v1/segments:preview": {"positive_data_acceptance": RULE},
        "PATCH /v1/segments/{segment_id}": {"positive_data_acceptance": RULE},
        "GET /v1/segments/{segment_id}/history": {
            "positive_data_acceptance": "`cursor` must be an entry of the segment's history"
        },
        "POST /v1/webhook-endpoints": {"positive_data_acceptance": WEBHOOK_URL},
        "PATCH /v1/webhook-endpoints/{endpoint_id}": {"positive_data_acceptance": WEBHOOK_URL},
    },
}

# -- generation ----------------------------------------------------------------------------------------------

SEED = 20261129
MAX_EXAMPLES = 25  # per operation in the fuzzing phase (examples and coverage enumerate theirs)
# The coverage phase walks every member of a recursive schema at every depth: some 8,000 requests for each
# operation that takes a segment rule, all through the same parser. It gets rules with one level of groups;
# the fuzzing and stateful phases nest them deeper.
MAX_COVERAGE_RULE_DEPTH = 1
KEY_NUMBERS = itertools.count()

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def config(service: str) -> schemathesis.Config:
    excluded = [
        {"include-name": label, "checks": {check: {"enabled": False} for check in checks}}
        for label, checks in EXCLUDED_CHECKS[service].items()
    ]
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            "continue-on-failure": True,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "operations": excluded,
        }
    )


def rule_depth(rule: Any) -> int:
    """How deep groups (`all`, `any`, `not`) nest in a segment rule: 0 for a condition."""
    if isinstance(rule, dict):
        for group in ("all", "any", "not"):
            if group in rule:
                children = rule[group] if isinstance(rule[group], list) else [rule[group]]
                return 1 + max((rule_depth(child) for child in children), default=0)
    return 0


def filter_case(_: schemathesis.HookContext, case: schemathesis.Case[Any]) -> bool:
    """Coverage cases with rules nested deeper than MAX_COVERAGE_RULE_DEPTH are not sent."""
    if case.meta is None or not isinstance(case.meta.phase.data, CoveragePhaseData):
        return True
    return not isinstance(case.body, dict) or rule_depth(case.body.get("rule")) <= MAX_COVERAGE_RULE_DEPTH


def map_case(_: schemathesis.HookContext, case: schemathesis.Case[Any]) -> schemathesis.Case[Any]:
    """A client sends a new `Idempotency-Key` with each new request. Generated keys repeat (the coverage
    phase sends its boundary values with every body), and the same key with another body is refused (422,
    as the header's specification says). So a valid key becomes a unique one; an invalid one stays."""
    key = case.headers.get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(IDEMPOTENCY_KEY, key):
        case.headers["Idempotency-Key"] = f"schemathesis-{next(KEY_NUMBERS)}"
    return case


# -- the run -------------------------------------------------------------------------------------------------


def without_lifespan(app: ASGIApp) -> ASGIApp:
    """`app` for HTTP only: the stack's TestClient already runs its lifespan (workers, relays), which
    schemathesis would otherwise start a second time."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return asgi


def load(stack: Stack, service: str, tenant_key: str) -> OpenApiSchema:
    """The service's OpenAPI from its running app, with the tenant's key and the hooks above."""
    app = stack.clients[service].app
    schema = schemathesis.openapi.from_asgi("/openapi.json", without_lifespan(app), config=config(service))

    class BearerKey:
        """The tenant's API key; the admin token for tenant administration."""

        def get(self, case: schemathesis.Case[Any], _: schemathesis.AuthContext) -> str:
            return ADMIN_TOKEN if case.operation.path == "/v1/tenants" else tenant_key

        def set(self, case: schemathesis.Case[Any], token: str, _: schemathesis.AuthContext) -> None:
            case.headers["Authorization"] = f"Bearer {token}"

    schema.auth(refresh_interval=None)(BearerKey)
    schema.hook(filter_case)
    schema.hook(map_case)
    return schema


def run(service: str, schema: OpenApiSchema) -> list[str]:
    """Run the engine over `schema`: one entry per distinct failure, error, untested operation or stale
    exclusion."""
    problems: dict[tuple[str, ...], str] = {}
    tested: set[str] = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            label = event.recorder.label
            if event.status == Status.SKIP:
                continue
            tested.add(label)
            if event.status == Status.ERROR:
                problems.setdefault((label, "error"), f"{label}: errored (see the error below)")
            for checks in event.recorder.checks.values():
                for check in checks:
                    if (info := check.failure_info) is not None:
                        failure = info.failure
                        problems.setdefault(
                            (label, check.name, failure.title),
                            f"{label} [{check.name}] {failure.title}\n    {failure.message}\n"
                            f"    {info.code_sample}",
                        )
        elif isinstance(event, events.NonFatalError):
            error = event.info
            trace = f"\n{error.traceback}" if error.has_useful_traceback else ""
            problems.setdefault(
                (event.label, "error", str(event.value)),
                f"{event.label}: {error.title}: {error.message}{trace}",
            )
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            for failure in event.failures:
                problems.setdefault(
                    (str(failure.operation), failure.title),
                    f"{failure.operation}: {failure.title}\n    {failure.message}",
                )
    labels = set()
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            problems[("schema", str(result.err()))] = f"Invalid schema: {result.err()}"
        elif (label := result.ok().label) not in tested:
            problems[(label, "untested")] = f"{label}: not tested"
        else:
            labels.add(label)
    for label in EXCLUDED_CHECKS[service].keys() - labels:
        problems[(label, "excluded")] = f"{label}: in EXCLUDED_CHECKS but not an operation of {service}"
    return list(problems.values())


@pytest.fixture(autouse=True)
def _test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Generated endpoint URLs are mostly junk (422) either way; private hosts must not be the reason.
    monkeypatch.setenv("SEGMENTATION_WEBHOOK_ALLOW_PRIVATE", "true")
    # Tens of thousands of requests: their access logs would only slow the run down.
    monkeypatch.setenv("CLIENTELA_LOG_LEVEL", "WARNING")


@pytest.mark.parametrize("service", ["ingest", "profile", "segmentation"])
def test_openapi_conformance(stack: Stack, service: str) -> None:
    schema = load(stack, service, stack.create_tenant("Loja Schemathesis"))
    try:
        problems = run(service, schema)
    finally:
        asgi.shutdown_lifespans()  # else schemathesis keeps the app (see without_lifespan) until exit
    assert not problems, f"{len(problems)} schemathesis failure(s) in {service}:\n\n" + "\n\n".join(problems)
