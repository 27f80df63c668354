"""Lanes: which waiting computation gets the next free slot of the pool, and when.

A :class:`Lane` is one of the pool's lanes (``cheap``, ``expensive``; ``service.cost`` files a
computation by its estimate) with its slots (``service.pool.Slot``, one process each) and its
waiting list.  A job asks for a slot (:meth:`Lane.enter`) and gets one as soon as one is free,
in round-robin order across clients (the host that asked; a sweep is one client), so
one client's many questions do not starve another's one.  The waiting list is the only queue:
a slot runs one job at a time, so a job's position and ETA (:meth:`Lane.position`,
:meth:`Lane.eta`) are the truth, and a cheap job never waits behind an expensive one.

Admission (:meth:`Lane.admit`): the expensive lane's waiting list holds at most
``STAIRCASE_MAX_QUEUED_EXPENSIVE`` jobs, ``STAIRCASE_MAX_QUEUED_PER_CLIENT`` of them from one
client; beyond that a new question is refused (429) with the seconds until a place frees up.
"""
from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from . import cost


@dataclass
class Ticket:
    """A job's place in a lane: waiting (``future`` pending), then holding ``slot``."""

    job_id: str
    client: str
    estimate: float
    queued_at: float = field(default_factory=time.monotonic)
    started_at: Optional[float] = None
    slot: object = None
    progress: tuple[int, int] = (0, 0)
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Lane:
    def __init__(self, name: str, slots: list, capacity: Optional[int] = None,
                 per_client: Optional[int] = None):
        self.name = name
        self.slots = list(slots)
        self.free = list(slots)
        self.capacity = capacity      # waiting jobs at most (None: no limit)
        self.per_client = per_client  # waiting jobs of one client at most (None: no limit)
        self.waiting: dict[str, deque[Ticket]] = {}
        self.turns: deque[str] = deque()  # clients with waiting jobs, in round-robin order
        self.running: dict[str, Ticket] = {}

    # ---- entering and leaving
    def enter(self, ticket: Ticket) -> Ticket:
        """Join the waiting list; ``ticket.future`` resolves to a slot."""
        if ticket.client not in self.waiting:
            self.waiting[ticket.client] = deque()
            self.turns.append(ticket.client)
        self.waiting[ticket.client].append(ticket)
        self._dispatch()
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """The job is over (done, failed, cancelled): free its slot, or its place in the list."""
        if ticket.slot is not None:
            if self.running.pop(ticket.job_id, None) is not None:
                self.free.append(ticket.slot)
            ticket.slot = None
        else:
            q = self.waiting.get(ticket.client)
            if q is not None and ticket in q:
                q.remove(ticket)
                if not q:
                    self._drop(ticket.client)
            if not ticket.future.done():
                ticket.future.cancel()
        self._dispatch()

    def _drop(self, client: str) -> None:
        self.waiting.pop(client, None)
        try:
            self.turns.remove(client)
        except ValueError:
            pass

    def _dispatch(self) -> None:
        while self.free and self.turns:
            client = self.turns[0]
            q = self.waiting[client]
            ticket = q.popleft()
            if q:
                self.turns.rotate(-1)  # this client's next job waits for everyone else's turn
            else:
                self._drop(client)
            if ticket.future.done():  # abandoned while waiting
                continue
            ticket.slot = self.free.pop(0)
            ticket.started_at = time.monotonic()
            self.running[ticket.job_id] = ticket
            ticket.future.set_result(ticket.slot)

    # ---- what a job is told
    def order(self) -> list[Ticket]:
        """The waiting jobs in the order they will start (round robin over clients)."""
        queues = [list(self.waiting[c]) for c in self.turns]
        out: list[Ticket] = []
        depth = 0
        while True:
            row = [q[depth] for q in queues if len(q) > depth]
            if not row:
                return out
            out.extend(row)
            depth += 1

    def queued(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def position(self, job_id: str) -> Optional[int]:
        """1 for the next job to start; None when not waiting here."""
        for i, t in enumerate(self.order()):
            if t.job_id == job_id:
                return i + 1
        return None

    def _free_times(self, now: float) -> list[float]:
        """Seconds until each slot is free (a running job that overran its estimate: a tenth of
        its estimate, at least a second, as a guess)."""
        times = [0.0] * (len(self.slots) - len(self.running))
        for t in self.running.values():
            left = cost.remaining(t.estimate, now - (t.started_at or now), *t.progress)
            times.append(left if left is not None else max(1.0, 0.1 * t.estimate))
        return times

    def eta(self, job_id: str) -> Optional[float]:
        """Seconds until ``job_id`` (waiting or running here) is expected to finish."""
        now = time.monotonic()
        t = self.running.get(job_id)
        if t is not None:
            return cost.remaining(t.estimate, now - (t.started_at or now), *t.progress)
        if not self.slots:
            return None
        free = self._free_times(now)
        heapq.heapify(free)
        for t in self.order():
            start = heapq.heappop(free)
            if t.job_id == job_id:
                return start + t.estimate
            heapq.heappush(free, start + t.estimate)
        return None

    def admit(self, client: str) -> Optional[float]:
        """None when a new job of ``client`` may wait here, else the seconds until a place in
        the waiting list frees up (the Retry-After of the 429)."""
        full = self.capacity is not None and self.queued() >= self.capacity
        mine = self.per_client is not None and len(self.waiting.get(client, ())) >= self.per_client
        if not (full or mine):
            return None
        free = self._free_times(time.monotonic())
        return max(1.0, min(free) if free else 1.0)


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header (1 s to an hour)."""
    return int(min(3600, max(1, math.ceil(seconds))))
