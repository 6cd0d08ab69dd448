"""Leader election on a coordination.k8s.io/v1 Lease, following client-go's algorithm.

Get (or create) the Lease; take it over only when its holder has not renewed
it for a whole lease duration *as observed locally* (no trust in other
clocks); write with the resourceVersion read, so that a conflict means another
replica won. The holder renews every retry period and gives up leadership
when it could not renew for the renew deadline, which is shorter than the
lease duration: it stops acting before anyone else may start. On shutdown it
releases the Lease so that a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes.aio import client

from taskmaster.core.times import micro_time
from taskmaster.shell.kube import json_unless_missing

logger = logging.getLogger(__name__)


def _now() -> str:
    return micro_time(datetime.now(UTC))


@dataclass(frozen=True)
class LeaseConfig:
    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    def __init__(self, api: client.ApiClient, config: LeaseConfig) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.config = config
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        # Monotonic time until which this replica surely holds the Lease.
        self.valid_until = 0.0
        # Set on shutdown: the campaign must not take back the Lease it released.
        self.released = False

    @property
    def leading(self) -> bool:
        return time.monotonic() < self.valid_until

    async def _get(self) -> dict[str, Any] | None:
        response = await self.leases.read_namespaced_lease_without_preload_content(
            self.config.name, self.config.namespace
        )
        return await json_unless_missing(response)

    async def _try_acquire_or_renew(self) -> bool:
        started = time.monotonic()
        config = self.config
        now = _now()
        lease = await self._get()
        if lease is None:
            new = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": config.name, "namespace": config.namespace},
                "spec": {
                    "holderIdentity": config.identity,
                    "leaseDurationSeconds": round(config.lease_duration),
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            response = await self.leases.create_namespaced_lease_without_preload_content(
                config.namespace, cast(Any, new)
            )
            await response.read()
            if response.status != 201:
                return False
            self.valid_until = started + config.renew_deadline
            return True

        spec = lease.get("spec") or {}
        if self._observed is None or self._observed.get("spec") != spec:
            self._observed, self._observed_at = lease, time.monotonic()
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or config.lease_duration)
        held_by_other = holder not in ("", config.identity)
        if held_by_other and self._observed_at + duration > time.monotonic():
            return False

        if holder != config.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["holderIdentity"] = config.identity
        spec["leaseDurationSeconds"] = round(config.lease_duration)
        spec["renewTime"] = now
        lease["spec"] = spec
        response = await self.leases.replace_namespaced_lease_without_preload_content(
            config.name, config.namespace, cast(Any, lease)
        )
        body = await response.read()
        if response.status != 200:
            # 409: someone else wrote first; they lead.
            return False
        self._observed, self._observed_at = json.loads(body), time.monotonic()
        self.valid_until = started + config.renew_deadline
        return True

    async def _attempt(self) -> bool:
        if self.released:
            return False
        try:
            return await asyncio.wait_for(
                self._try_acquire_or_renew(), timeout=self.config.retry_period * 2
            )
        except Exception as error:  # a failed attempt is only a lost round
            logger.warning("lease %s: attempt failed: %s", self.config.name, error)
            return False

    async def run(
        self,
        on_started: Callable[[], Awaitable[None] | None],
        on_stopped: Callable[[], Awaitable[None] | None],
    ) -> None:
        """Campaign, lead, and campaign again after losing, until cancelled."""
        config = self.config
        while True:
            while True:
                if await self._attempt():
                    break
                await asyncio.sleep(config.retry_period)
            logger.info("lease %s: %s became the leader", config.name, config.identity)
            await _call(on_started)
            try:
                while True:
                    await asyncio.sleep(config.retry_period)
                    if await self._attempt():
                        continue
                    if not self.leading:
                        break
            finally:
                self.valid_until = 0.0
                await _call(on_stopped)
            logger.warning(
                "lease %s: %s lost the lease and is now a follower", config.name, config.identity
            )

    async def release(self) -> None:
        """Give the Lease up at once if this replica holds it (on shutdown).

        A renewal already in flight can write between the read and the write
        here (409): read again, as long as the Lease is still ours.
        """
        self.valid_until = 0.0
        self.released = True
        for _ in range(3):
            try:
                lease = await self._get()
                if lease is None or (lease.get("spec") or {}).get("holderIdentity") != (
                    self.config.identity
                ):
                    return
                lease["spec"].update(
                    {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _now()}
                )
                response = await self.leases.replace_namespaced_lease_without_preload_content(
                    self.config.name, self.config.namespace, cast(Any, lease)
                )
                await response.read()
            except Exception as error:
                logger.warning("lease %s: release failed: %s", self.config.name, error)
                return
            if response.status == 200:
                logger.info("lease %s: released", self.config.name)
                return
            if response.status != 409:
                logger.warning("lease %s: release refused (%s)", self.config.name, response.status)
                return
        logger.warning("lease %s: not released: it kept changing", self.config.name)


async def _call(callback: Callable[[], Awaitable[None] | None]) -> None:
    result = callback()
    if result is not None:
        await result
