"""Provider limits: one gate per model that every request to it passes, shared by all calls.

A provider limits a model's requests per minute (``ModelSpec.rpm``) and tokens per minute
(``ModelSpec.tpm``). Every call to the model in the process (every proposer, every item of a
batch run, in every event loop and thread) shares one ``ModelGate``, keyed by the model, its
endpoint and its limits, and kept by nodes/models/resources.py:

- requests: LangChain's ``InMemoryRateLimiter`` (a token bucket of requests), attached to the
  chat model as its ``rate_limiter`` so LangChain acquires it before each request, retries
  included; it is thread-safe and polls with ``asyncio.sleep``, so it serves every loop. Only
  one waiter per event loop polls it at a time (an ``asyncio.Lock`` of that loop): dozens of
  waiting calls cost no CPU. The bucket holds ``BUCKET`` requests: with one, every late wake-up
  of the poller (a busy machine) is rate lost for good; with two, it is made up by the next
  request, and no second of the run sees more than one request above the rate.
- tokens: a leaky bucket of a minute of tokens, as providers count (``TokenBucket``), acquired by
  ``ask_model`` once per call for the prompt's estimated tokens plus ``max_tokens`` (what
  OpenAI-style providers reserve when a request arrives).
- a 429: the call loop reports it (``on_retry``), and ``pause`` holds back every request to the
  model until the wait the server asked for (``Retry-After``) has passed, instead of each call
  hammering on its own. The held requests then resume spread over a ramp (``RAMP`` of the pause
  after it ends, each at its own random moment): released at one instant they would hit the
  provider's limit together again, and each burst of 429s would use one attempt of every call.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import weakref

from langchain_core.rate_limiters import BaseRateLimiter, InMemoryRateLimiter

from langgraph_moa.nodes.models.settings import ModelSettings

# How often the one waiting request checks the bucket, as a share of the interval between
# requests (at least every millisecond, at most every 100 ms).
CHECKS_PER_REQUEST = 25
BUCKET = 2
# After a pause of P seconds, held requests resume at random moments over the next RAMP * P s.
RAMP = 0.5


class TokenBucket:
    """A leaky bucket of ``capacity`` tokens that drains at ``capacity / period_s`` a second,
    shared by every thread and event loop.

    Written here because aiolimiter's ``AsyncLimiter`` belongs to one event loop (its waiters
    are that loop's futures) and LangChain's ``InMemoryRateLimiter`` takes one unit at a time.
    A waiter sleeps until the bucket has drained enough for it, then tries again.
    """

    def __init__(self, capacity: float, period_s: float = 60.0) -> None:
        self.capacity, self.rate = capacity, capacity / period_s
        self._level = 0.0
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _take(self, amount: float) -> float:
        """Take ``amount`` now (0.0), or say how long to wait before it may fit."""
        with self._lock:
            now = time.monotonic()
            self._level = max(0.0, self._level - (now - self._checked) * self.rate)
            self._checked = now
            if self._level + amount <= self.capacity:
                self._level += amount
                return 0.0
            return (self._level + amount - self.capacity) / self.rate

    async def acquire(self, amount: float) -> None:
        while (wait := self._take(min(amount, self.capacity))) > 0:
            await asyncio.sleep(wait)


class ModelGate(BaseRateLimiter):
    """The limits of one model: requests, tokens and the pause after a 429."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.requests = (
            InMemoryRateLimiter(
                requests_per_second=rpm / 60,
                check_every_n_seconds=min(0.1, max(0.001, 60 / rpm / CHECKS_PER_REQUEST)),
                max_bucket_size=BUCKET,
            )
            if rpm
            else None
        )
        self.tokens = TokenBucket(tpm, 60) if tpm else None
        self.paused_until = 0.0  # time.monotonic() before which no request is sent
        self.ramp_s = 0.0  # then requests resume over this many seconds (RAMP of the pause)
        self.pauses = 0  # 429s that paused the model (for progress and tests)
        self._lock = threading.Lock()
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def pause(self, seconds: float) -> None:
        """Hold back every request to the model for ``seconds`` (a 429's Retry-After)."""
        with self._lock:
            self.pauses += 1
            until = time.monotonic() + seconds
            if until >= self.paused_until:
                self.paused_until, self.ramp_s = until, RAMP * seconds

    def _turn(self) -> asyncio.Lock:
        """This event loop's lock: one waiter per loop polls the bucket."""
        loop = asyncio.get_running_loop()
        with self._lock:
            turn = self._turns.get(loop)
            if turn is None:
                turn = self._turns[loop] = asyncio.Lock()
            return turn

    def _paused_for(self) -> float:
        return self.paused_until - time.monotonic()

    def _held_for(self, draw: float) -> float:
        """Seconds a request with its moment ``draw`` (in [0, 1)) in the ramp still waits."""
        return self.paused_until + draw * self.ramp_s - time.monotonic()

    def _try_now(self) -> bool:
        if self._paused_for() > 0:
            return False
        return self.requests is None or self.requests.acquire(blocking=False)

    def acquire(self, *, blocking: bool = True) -> bool:
        """The sync path (LangChain's sync calls; the project calls models asynchronously)."""
        if not blocking:
            return self._try_now()
        draw = random.random()
        while (wait := self._held_for(draw)) > 0:
            time.sleep(wait)
        return self.requests is None or self.requests.acquire()

    async def aacquire(self, *, blocking: bool = True) -> bool:
        """Wait for the pause to end and for a request's turn in the rate."""
        if not blocking:
            return self._try_now()
        draw = random.random()  # this request's moment in the ramp after a pause
        while True:
            # Outside the lock: each held request sleeps to its own moment (a sleep costs no CPU).
            while (wait := self._held_for(draw)) > 0:
                await asyncio.sleep(wait)
            if self.requests is None:
                return True
            async with self._turn():  # one waiter polls the bucket; the others wait their turn
                await self.requests.aacquire()
            if self._paused_for() <= 0:  # no 429 came in while we waited for the bucket
                return True

    async def reserve_tokens(self, tokens: int) -> None:
        """Wait until ``tokens`` fit in the model's tokens per minute."""
        if self.tokens is not None:
            await self.tokens.acquire(float(tokens))


def gate_for(settings: ModelSettings) -> ModelGate:
    """The one gate of ``settings``' model in this process."""
    from langgraph_moa.nodes.models.resources import RESOURCES  # it builds gates: imports us

    return RESOURCES.gate(settings)
