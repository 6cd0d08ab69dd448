"""Releasing the Lease on shutdown, against a Lease API that answers as the API server would."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from taskmaster.shell.leader import LeaderElector, LeaseConfig

CONFIG = LeaseConfig(name="lease", namespace="ns", identity="me")


class Response:
    def __init__(self, status: int, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.body = json.dumps(body or {}).encode()

    async def read(self) -> bytes:
        return self.body


class Leases:
    """One Lease with optimistic concurrency; `renew_before_write` writes in between
    a read and the next replace, as the elector's own renewal in flight would."""

    def __init__(self, holder: str, renew_before_write: int = 0) -> None:
        self.lease = {"metadata": {"resourceVersion": "1"}, "spec": {"holderIdentity": holder}}
        self.renew_before_write = renew_before_write
        self.writes: list[dict[str, Any]] = []

    async def read_namespaced_lease_without_preload_content(self, *_: Any) -> Response:
        return Response(200, copy.deepcopy(self.lease))

    async def replace_namespaced_lease_without_preload_content(
        self, _name: str, _namespace: str, body: dict[str, Any]
    ) -> Response:
        if self.renew_before_write:
            self.renew_before_write -= 1
            self._bump()
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            return Response(409)
        self.lease = copy.deepcopy(body)
        self._bump()
        self.writes.append(self.lease["spec"])
        return Response(200, self.lease)

    def _bump(self) -> None:
        version = int(self.lease["metadata"]["resourceVersion"]) + 1
        self.lease["metadata"]["resourceVersion"] = str(version)


def elector(leases: Leases) -> LeaderElector:
    elector = LeaderElector(api=None, config=CONFIG)  # type: ignore[arg-type]
    elector.leases = leases  # type: ignore[assignment]
    return elector


def test_a_release_that_races_a_renewal_reads_again_and_releases() -> None:
    leases = Leases(holder="me", renew_before_write=1)
    asyncio.run(elector(leases).release())
    assert leases.lease["spec"]["holderIdentity"] is None
    assert leases.lease["spec"]["leaseDurationSeconds"] == 1


def test_a_released_lease_is_not_taken_back_by_the_campaign() -> None:
    leases = Leases(holder="me")
    leader = elector(leases)

    async def release_then_campaign() -> bool:
        await leader.release()
        return await leader._attempt()

    assert asyncio.run(release_then_campaign()) is False
    assert leases.lease["spec"]["holderIdentity"] is None
    assert len(leases.writes) == 1


def test_a_lease_held_by_another_is_left_alone() -> None:
    leases = Leases(holder="someone-else")
    asyncio.run(elector(leases).release())
    assert leases.writes == []
