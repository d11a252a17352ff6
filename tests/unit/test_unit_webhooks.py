"""Webhooks, the pure parts: Standard Webhooks signing (checked with the `standardwebhooks` verifier),
secrets, the SSRF classification of addresses and URLs, the retry schedule with jitter, and Retry-After."""

from __future__ import annotations

import base64
import ipaddress
import random
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpcore
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from services.segmentation import webhooks
from services.segmentation.delivery import (
    MAX_RETRY_AFTER,
    Job,
    Policy,
    lanes,
    parse_retry_after,
    retry_delay,
    signed_headers,
)
from services.segmentation.models import ProfileProjection
from services.segmentation.settings import DEFAULT_RETRY_SCHEDULE_S
from services.segmentation.ssrf import (
    BlockedAddress,
    Guard,
    GuardedBackend,
    IPAddress,
    UnsafeURL,
    blocked_reason,
    check_url,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def body() -> bytes:
    return webhooks.body(
        "segment.entered",
        NOW,
        {"segment_id": uuid4(), "profile_id": uuid4(), "profile_version": 3, "traits": {"orders_count": 2}},
    )


# -- signing -----------------------------------------------------------------------------------------------


def test_a_delivery_verifies_with_the_standardwebhooks_verifier() -> None:
    secret = webhooks.new_secret()
    payload = body()
    message = webhooks.message_id(uuid4())
    headers = signed_headers([secret], message, payload, datetime.now(UTC))
    assert headers["webhook-id"] == message
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    assert Webhook(secret).verify(payload, headers) == orjson.loads(payload)
    assert Webhook(secret).verify(payload.decode(), headers) == orjson.loads(payload)

    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(payload, headers)  # another secret
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(payload.replace(b"3", b"4"), headers)  # a changed body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(payload, {**headers, "webhook-id": webhooks.message_id(uuid4())})
    stale = signed_headers([secret], message, payload, datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(payload, stale)  # the timestamp is the attempt's: replays are refused


def test_during_a_rotation_both_secrets_sign_and_either_verifies() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    payload = body()
    headers = signed_headers([new, old], webhooks.message_id(uuid4()), payload, datetime.now(UTC))
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert Webhook(new).verify(payload, headers)
    assert Webhook(old).verify(payload, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(payload, headers)


def test_secrets_and_message_ids_have_the_standard_forms() -> None:
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32  # 24-64 bytes per the spec
    assert secret != webhooks.new_secret()
    message = webhooks.message_id(uuid4())
    assert message.startswith("msg_")
    assert "." not in message  # the signed content is `id.timestamp.body`


def test_the_signature_changes_with_the_timestamp_but_the_id_does_not() -> None:
    secret, payload, message = webhooks.new_secret(), body(), webhooks.message_id(uuid4())
    first = signed_headers([secret], message, payload, NOW)
    retry = signed_headers([secret], message, payload, NOW + timedelta(seconds=5))
    assert first["webhook-id"] == retry["webhook-id"]
    assert first["webhook-signature"] != retry["webhook-signature"]
    assert int(retry["webhook-timestamp"]) - int(first["webhook-timestamp"]) == 5


def test_payloads_are_standard_webhooks_shaped_and_carry_no_contact_data() -> None:
    parsed = orjson.loads(body())
    assert set(parsed) == {"type", "timestamp", "data"}
    assert parsed["timestamp"] == "2026-11-20T12:00:00Z"
    traits_keys = {
        "orders_count",
        "total_spent",
        "average_order_value",
        "first_order_at",
        "last_order_at",
        "rfm_group",
        "clv_12m",
        "churn_probability",
        "next_order_at",
        "state",
    }
    projection = ProfileProjection(
        profile_id=uuid4(),
        tenant_id=uuid4(),
        profile_version=1,
        orders_count=2,
        total_spent_minor=25990,
        city="São Paulo",
    )
    projection.zip = "01310100"
    traits = webhooks.traits(projection)
    assert set(traits) == traits_keys
    assert traits["total_spent"] == "259.90"
    for personal in ("email", "phone", "name", "document", "cpf", "zip", "city", "birth_date", "street"):
        assert personal not in traits


def job(ordering_key: str | None) -> Job:
    return Job(uuid4(), uuid4(), "https://example.com/h", "msg_1", b"{}", [], ordering_key=ordering_key)


@given(
    st.lists(st.sampled_from(["profile:a", "profile:b", "profile:c", None]), max_size=40), st.integers(1, 8)
)
def test_lanes_keep_each_keys_jobs_together_and_in_order(keys: list[str | None], parallelism: int) -> None:
    jobs = [job(key) for key in keys]
    queues = lanes(jobs, parallelism)
    assert len(queues) <= parallelism
    assert sorted(j.delivery_id for q in queues for j in q) == sorted(j.delivery_id for j in jobs)
    for key in {"profile:a", "profile:b", "profile:c"}:
        holding = [q for q in queues if any(j.ordering_key == key for j in q)]
        assert len(holding) <= 1  # one lane per key ...
        if holding:
            assert [j for j in holding[0] if j.ordering_key == key] == [
                j for j in jobs if j.ordering_key == key
            ]
    for queue in queues:  # ... and every lane in the jobs' own order
        assert queue == [j for j in jobs if j in queue]


def test_one_lane_when_parallelism_is_1() -> None:
    jobs = [job(key) for key in ("profile:a", None, "profile:b", None)]
    assert lanes(jobs, 1) == [jobs]


def test_segment_filters_apply_to_segment_events_only() -> None:
    segment = uuid4()
    only_one = webhooks.Subscriber(
        uuid4(), frozenset({"segment.entered", "profile.merged"}), frozenset({str(segment)})
    )
    assert only_one.wants("segment.entered", segment)
    assert not only_one.wants("segment.entered", uuid4())
    assert not only_one.wants("segment.exited", segment)  # not subscribed
    assert only_one.wants("profile.merged")  # not a segment event: never filtered by segment
    every = webhooks.Subscriber(uuid4(), frozenset({"segment.exited"}), None)
    assert every.wants("segment.exited", uuid4())


# -- SSRF --------------------------------------------------------------------------------------------------

BLOCKED = {
    "127.0.0.1": "loopback",
    "127.1.2.3": "loopback",
    "::1": "loopback",
    "10.0.0.1": "private",
    "10.255.255.255": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.1.10": "private",
    "169.254.169.254": "metadata",
    "169.254.170.2": "metadata",
    "100.100.100.200": "metadata",
    "fd00:ec2::254": "metadata",
    "169.254.1.1": "link_local",
    "fe80::1": "link_local",
    "100.64.0.1": "cgnat",
    "100.127.255.254": "cgnat",
    "::ffff:127.0.0.1": "ipv4_mapped",
    "::ffff:10.0.0.1": "ipv4_mapped",
    "::ffff:8.8.8.8": "ipv4_mapped",  # always: whatever it embeds
    "::ffff:169.254.169.254": "ipv4_mapped",
    "::127.0.0.1": "ipv4_translated",
    "64:ff9b::a00:1": "ipv4_translated",
    "2002:a00:1::1": "ipv4_translated",
    "2001::1": "ipv4_translated",
    "fc00::1": "unique_local",
    "fd12:3456:789a::1": "unique_local",
    "fec0::1": "unique_local",
    "0.0.0.0": "unspecified",  # noqa: S104 - an address to classify, not to bind
    "0.1.2.3": "unspecified",
    "::": "unspecified",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "ff02::1": "multicast",
    "255.255.255.255": "reserved",
    "240.0.0.1": "reserved",
    "192.0.2.1": "reserved",
    "198.51.100.7": "reserved",
    "203.0.113.9": "reserved",
    "198.18.0.1": "reserved",
    "192.0.0.8": "reserved",
    "2001:db8::1": "reserved",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "200.147.67.142", "2606:4700:4700::1111", "2804:14c::1"]


@pytest.mark.parametrize(("address", "reason"), sorted(BLOCKED.items()))
def test_non_public_addresses_are_blocked(address: str, reason: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@given(st.ip_addresses())
def test_every_address_is_either_global_or_blocked(address: IPAddress) -> None:
    reason = blocked_reason(address)
    if reason is None:
        assert address.is_global
        assert not address.is_multicast


def test_the_development_setting_allows_private_addresses_but_never_metadata() -> None:
    allowed = [
        "127.0.0.1",
        "::1",
        "10.0.0.1",
        "192.168.0.2",
        "172.20.0.1",
        "100.64.0.1",
        "fd00::1",
        "fe80::1",
    ]
    for address in allowed:
        assert blocked_reason(ipaddress.ip_address(address), allow_private=True) is None, address
    never = ["169.254.169.254", "fd00:ec2::254", "0.0.0.0", "224.0.0.1", "::ffff:127.0.0.1"]  # noqa: S104
    for address in never:
        assert blocked_reason(ipaddress.ip_address(address), allow_private=True) is not None, address


def resolving(names: dict[str, list[str]]) -> Guard:
    def resolver(host: str, port: int) -> list[IPAddress]:
        if host not in names:
            raise OSError("no such host")
        return [ipaddress.ip_address(a) for a in names[host]]

    return Guard(resolver=resolver)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/x", "scheme"),
        ("ftp://hooks.example.com/x", "scheme"),
        ("hooks.example.com/x", "scheme"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https:///x", "malformed"),
        ("https://hooks.example.com:99999/x", "malformed"),
        ("https://nowhere.example.com/x", "unresolvable"),
        ("https://localhost/x", "loopback"),
        ("https://metadata.internal/x", "metadata"),
        ("https://intranet.example.com/x", "private"),
        ("https://mixed.example.com/x", "private"),  # one private address among public ones is enough
        ("https://cgnat.example.com/x", "cgnat"),
        ("https://mapped.example.com/x", "ipv4_mapped"),
        ("https://ula.example.com/x", "unique_local"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://[::1]/x", "loopback"),
        ("https://[::ffff:127.0.0.1]/x", "ipv4_mapped"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://0.0.0.0/x", "unspecified"),
        ("https://10.1.2.3:8443/x", "private"),
    ],
)
def test_urls_that_may_not_be_registered(url: str, reason: str) -> None:
    guard = resolving(
        {
            "hooks.example.com": ["93.184.215.14"],
            "localhost": ["127.0.0.1", "::1"],
            "metadata.internal": ["169.254.169.254"],
            "intranet.example.com": ["10.0.0.5"],
            "mixed.example.com": ["93.184.215.14", "192.168.0.1"],
            "cgnat.example.com": ["100.64.0.1"],
            "mapped.example.com": ["::ffff:127.0.0.1"],
            "ula.example.com": ["fc00::1"],
        }
    )
    with pytest.raises(UnsafeURL) as refused:
        check_url(url, guard)
    assert refused.value.reason == reason
    assert url not in str(refused.value)  # errors never quote what was sent


@pytest.mark.parametrize(
    "url",
    [
        "https://0x7f000001/x",
        "https://2130706433/x",
        "https://127.1/x",
        "https://017700000001/x",
        "https://[::1%251]/x",
        "https://[fe80::1%25eth0]/x",
        "https://LOCALHOST/x",
    ],
)
def test_odd_spellings_of_internal_addresses_are_caught(url: str) -> None:
    """Numeric, octal, hexadecimal and short IPv4 forms, zone ids: the system resolver (no DNS needed)
    turns them into the address that would be connected to, and that address is checked."""
    with pytest.raises(UnsafeURL) as refused:
        check_url(url, Guard())
    assert refused.value.reason in {"loopback", "link_local"}


def test_urls_that_may_be_registered() -> None:
    guard = resolving({"hooks.example.com": ["93.184.215.14", "2606:2800:220:1::1"]})
    check_url("https://hooks.example.com/clientela?x=1", guard)
    check_url("https://hooks.example.com:8443/", guard)
    check_url("https://93.184.215.14/x", guard)
    local = Guard(allow_private=True, resolver=guard.resolver)
    check_url("http://127.0.0.1:8080/hook", local)  # development only
    check_url("http://[::1]:8080/hook", local)
    with pytest.raises(UnsafeURL):
        check_url("https://169.254.169.254/", local)


def test_the_connection_time_check_refuses_before_any_socket_is_opened() -> None:
    backend = GuardedBackend(resolving({"rebound.example.com": ["127.0.0.1"]}))
    with pytest.raises(BlockedAddress) as refused:
        backend.connect_tcp("rebound.example.com", 443, timeout=1)
    assert refused.value.reason == "loopback"
    assert isinstance(refused.value, httpcore.ConnectError)  # httpx reports it as a connection failure
    with pytest.raises(BlockedAddress):
        backend.connect_tcp("169.254.169.254", 80, timeout=1)


# -- retries -----------------------------------------------------------------------------------------------


def test_the_default_schedule_is_the_standard_webhooks_one() -> None:
    policy = Policy()
    assert policy.max_attempts == 10
    assert DEFAULT_RETRY_SCHEDULE_S == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert timedelta(seconds=sum(DEFAULT_RETRY_SCHEDULE_S)) == timedelta(hours=75, minutes=35, seconds=5)


@given(st.integers(min_value=1, max_value=9), st.integers(min_value=0, max_value=2**32))
def test_retry_delays_follow_the_schedule_with_jitter(attempts: int, seed: int) -> None:
    policy = Policy()
    delay = retry_delay(policy, attempts, random.Random(seed))
    base = DEFAULT_RETRY_SCHEDULE_S[attempts - 1]
    assert delay is not None
    assert base * 0.9 <= delay <= base * 1.1


def test_jitter_spreads_retries_and_there_is_no_retry_after_the_last_attempt() -> None:
    policy, rng = Policy(), random.Random(7)
    delays = {retry_delay(policy, 2, rng) for _ in range(20)}
    assert len(delays) > 10
    assert retry_delay(policy, 10, rng) is None
    assert retry_delay(policy, 0, rng) is None
    assert retry_delay(Policy(schedule_s=(1.0,)), 1, rng) is not None
    assert retry_delay(Policy(schedule_s=(1.0,)), 2, rng) is None


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(" 0 ", NOW) == 0
    assert parse_retry_after("Fri, 20 Nov 2026 12:02:00 GMT", NOW) == 120
    assert parse_retry_after("Fri, 20 Nov 2026 11:00:00 GMT", NOW) == 0  # in the past: at once
    assert parse_retry_after("9999999", NOW) == MAX_RETRY_AFTER.total_seconds()  # capped
    assert parse_retry_after("Sat, 20 Nov 2027 12:00:00 GMT", NOW) == MAX_RETRY_AFTER.total_seconds()
    for unreadable in (None, "", "soon", "-5", "1.5", "Fri, 99 Nov 2026"):
        assert parse_retry_after(unreadable, NOW) is None
