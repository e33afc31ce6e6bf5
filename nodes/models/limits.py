"""Provider limits: one gate per model that every request to it passes, shared by all calls.

A provider limits a model's requests per minute (``ModelSpec.rpm``) and tokens per minute
(``ModelSpec.tpm``). Every call to the model in this event loop (every proposer, every item of a
batch run) shares one ``ModelGate``, keyed by the model, its endpoint and its limits:

- requests: LangChain's ``InMemoryRateLimiter`` (a token bucket of requests), attached to the
  chat model as its ``rate_limiter`` so LangChain acquires it before each request, retries
  included. Only one waiter polls it at a time (an ``asyncio.Lock``): dozens of waiting calls
  cost no CPU. The bucket holds ``BUCKET`` requests: with one, every late wake-up of the poller
  (a busy machine) is rate lost for good; with two, it is made up by the next request, and no
  second of the run sees more than one request above the rate.
- tokens: aiolimiter's ``AsyncLimiter`` (a leaky bucket; the bucket is a minute of tokens, as
  providers count), acquired by ``ask_model`` once per call for the prompt's estimated tokens plus
  ``max_tokens`` (what OpenAI-style providers reserve when a request arrives).
- a 429: the call loop reports it (``on_retry``), and ``pause`` holds back every request to the
  model until the wait the server asked for (``Retry-After``) has passed, instead of each call
  hammering on its own. The held requests then resume spread over a ramp (``RAMP`` of the pause
  after it ends, each at its own random moment): released at one instant they would hit the
  provider's limit together again, and each burst of 429s would use one attempt of every call.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref

from aiolimiter import AsyncLimiter
from langchain_core.rate_limiters import BaseRateLimiter, InMemoryRateLimiter

from langgraph_moa.nodes.models.http import forget_closed_loops, running_loop
from langgraph_moa.nodes.models.settings import ModelSettings

# How often the one waiting request checks the bucket, as a share of the interval between
# requests (at least every millisecond, at most every 100 ms).
CHECKS_PER_REQUEST = 25
BUCKET = 2
# After a pause of P seconds, held requests resume at random moments over the next RAMP * P s.
RAMP = 0.5


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
        self.tokens = AsyncLimiter(tpm, 60) if tpm else None
        self.paused_until = 0.0  # time.monotonic() before which no request is sent
        self.ramp_s = 0.0  # then requests resume over this many seconds (RAMP of the pause)
        self.pauses = 0  # 429s that paused the model (for progress and tests)
        self._turn: asyncio.Lock | None = None

    def pause(self, seconds: float) -> None:
        """Hold back every request to the model for ``seconds`` (a 429's Retry-After)."""
        self.pauses += 1
        until = time.monotonic() + seconds
        if until >= self.paused_until:
            self.paused_until, self.ramp_s = until, RAMP * seconds

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
        if self._turn is None:
            self._turn = asyncio.Lock()
        draw = random.random()  # this request's moment in the ramp after a pause
        while True:
            # Outside the lock: each held request sleeps to its own moment (a sleep costs no CPU).
            while (wait := self._held_for(draw)) > 0:
                await asyncio.sleep(wait)
            if self.requests is None:
                return True
            async with self._turn:  # one waiter polls the bucket; the others wait their turn
                await self.requests.aacquire()
            if self._paused_for() <= 0:  # no 429 came in while we waited for the bucket
                return True

    async def reserve_tokens(self, tokens: int) -> None:
        """Wait until ``tokens`` fit in the model's tokens per minute."""
        if self.tokens is not None:
            await self.tokens.acquire(min(float(tokens), self.tokens.max_rate))


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[object, ModelGate]] = (
    weakref.WeakKeyDictionary()
)
_NO_LOOP: dict[object, ModelGate] = {}


def gate_for(settings: ModelSettings) -> ModelGate:
    """The gate of ``settings``' model in this event loop (aiolimiter's buckets are per loop)."""
    key = (settings.model, settings.base_url, settings.rpm, settings.tpm)
    loop = running_loop()
    if loop is None:
        gates = _NO_LOOP
    else:
        found = _GATES.get(loop)
        if found is None:
            forget_closed_loops(_GATES)
            found = _GATES[loop] = {}
        gates = found
    gate = gates.get(key)
    if gate is None:
        gate = gates[key] = ModelGate(settings.rpm, settings.tpm)
    return gate
