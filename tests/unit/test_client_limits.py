"""The client's rate limit (--kube-api-qps, --kube-api-burst) and the cap on runs in
flight (--max-active-runs): flags, bounds, and the token bucket on a fixed clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes.aio import client

from taskmaster.shell.kube import LimitedApiClient
from taskmaster.shell.operator import (
    DEFAULT_KUBE_API_BURST,
    DEFAULT_KUBE_API_QPS,
    DEFAULT_MAX_ACTIVE_RUNS,
    parse_args,
)
from taskmaster.shell.ratelimit import NORMAL, URGENT, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_at_once_then_the_bucket_refills_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(qps=10, burst=3, clock=clock)

    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.11  # one token back
    assert [bucket.try_take() for _ in range(2)] == [True, False]


def test_the_bucket_refills_to_its_burst_and_no_further() -> None:
    clock = Clock()
    bucket = TokenBucket(qps=10, burst=2, clock=clock)
    bucket.try_take()
    bucket.try_take()
    clock.now += 60  # idle for a minute: two tokens, not 600

    assert [bucket.try_take() for _ in range(3)] == [True, True, False]


def test_a_share_has_its_fraction_of_the_rate_and_burst_and_no_limit_stays_none() -> None:
    share = TokenBucket(qps=500, burst=2500, clock=Clock()).share(0.1)
    assert (share.qps, share.burst) == (50, 250)
    unlimited = TokenBucket(qps=0, burst=1, clock=Clock()).share(0.1)
    assert [unlimited.try_take() for _ in range(3)] == [True, True, True]


def test_no_limit_never_waits() -> None:
    bucket = TokenBucket(qps=0, burst=1, clock=Clock())

    assert all(bucket.try_take() for _ in range(10_000))


def test_waiting_requests_get_tokens_urgent_first_then_in_order() -> None:
    order: list[str] = []

    async def requests() -> list[float]:
        bucket = TokenBucket(qps=200, burst=1)
        assert await bucket.wait() == 0.0  # the burst

        async def request(name: str, priority: int) -> float:
            waited = await bucket.wait(priority)
            order.append(name)
            return waited

        first = asyncio.create_task(request("status 1", NORMAL))
        second = asyncio.create_task(request("status 2", NORMAL))
        await asyncio.sleep(0)  # both wait
        job = asyncio.create_task(request("create Job", URGENT))
        return list(await asyncio.gather(first, second, job))

    waited = asyncio.run(requests())
    assert order == ["create Job", "status 1", "status 2"]
    assert all(seconds > 0 for seconds in waited)


def test_a_bucket_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBucket(qps=5, burst=0)
    with pytest.raises(ValueError, match="qps >= 0"):
        TokenBucket(qps=-1, burst=1)


def test_every_request_of_the_client_waits_for_the_limiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    sent: list[str] = []

    async def call_api(self: Any, method: str, url: str, *_: Any, **rest: Any) -> str:
        assert "priority" not in rest  # the limiter's, not the client's
        sent.append(f"{method} {url}")
        return "response"

    monkeypatch.setattr(client.ApiClient, "call_api", call_api)

    async def requests() -> None:
        api = LimitedApiClient(client.Configuration(), TokenBucket(qps=20, burst=2), waits.append)
        try:
            for i in range(4):
                assert await api.call_api("GET", f"/r{i}") == "response"
        finally:
            await api.close()

    asyncio.run(requests())
    assert sent == [f"GET /r{i}" for i in range(4)]
    assert waits[:2] == [0.0, 0.0]
    assert all(wait > 0 for wait in waits[2:])


def test_the_limits_have_measured_defaults_and_bounds() -> None:
    options = parse_args([])
    assert (options.kube_api_qps, options.kube_api_burst, options.max_active_runs) == (
        DEFAULT_KUBE_API_QPS,
        DEFAULT_KUBE_API_BURST,
        DEFAULT_MAX_ACTIVE_RUNS,
    )
    options = parse_args(["--kube-api-qps=0", "--max-active-runs=0"])
    assert (options.kube_api_qps, options.max_active_runs) == (0, 0)  # no limit, no cap


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        ("--kube-api-qps=-1", "--kube-api-qps"),
        ("--kube-api-qps=1e9", "--kube-api-qps"),
        ("--kube-api-burst=0", "--kube-api-burst"),
        ("--max-active-runs=-5", "--max-active-runs"),
        ("--max-active-runs=10000000", "--max-active-runs"),
    ],
)
def test_a_limit_out_of_bounds_is_refused_naming_the_flag(
    flag: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args([flag])
    assert named in capsys.readouterr().err
