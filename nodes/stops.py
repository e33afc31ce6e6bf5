"""Stop sequences (OpenAI's ``stop``, LangChain's ``stop=``): the answer ends before the first.

A run's stop sequences (the graph's input ``stop``) go to the aggregator's own requests only
(``for_provider``): the provider stops generating there, so the tokens after a stop are neither
written nor paid for. The proposers' answers are the aggregator's material, never cut.

The answer is also cut here, whatever the aggregator's provider does with them (one may ignore
``stop``, or refuse it: ask_model then asks again without, and from then on sends that model at
that endpoint none; a sequence may straddle two requests of a continued or staircase answer):
the text is cut where a sequence first appears, the sequence left out, as OpenAI does. A client
that relies on it (a ReAct-style agent stops the model before it writes the tool's
"Observation:" itself) would otherwise get text past the point it asked for, silently. The
aggregator's node cuts the answer it keeps; ``moa serve`` and ``ChatMoA`` cut what they stream.

Streamed, a piece of text that may be the start of a stop sequence is held until the next token
says whether it is one, so a sequence split across tokens is still caught and never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph_moa.nodes.errors import ConfigError

# OpenAI takes at most 4 stop sequences (a 400 for more): no provider is sent more.
MAX_STOPS = 4


def stops_of(value: Any) -> list[str]:
    """A run's ``stop`` input as a list: None, one string or a list of strings (any number:
    every one cuts the answer); ``ConfigError`` for anything else, before any model is paid."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(s, str) for s in value):
        return list(value)
    raise ConfigError(f"stop must be a string or a list of strings, not {type(value).__name__}")


def for_provider(stops: Sequence[str]) -> list[str]:
    """What the aggregator's request carries: the first ``MAX_STOPS`` non-empty sequences (any
    further ones are cut here only)."""
    return [s for s in stops if s][:MAX_STOPS]


def reaches(text: str, stops: Sequence[str]) -> bool:
    """Whether ``text`` holds one of ``stops`` (everything after it is cut)."""
    return any(s and s in text for s in stops)


class StopAt:
    """Cuts an answer, given whole (``cut``) or piece by piece (``feed`` then ``flush``), at the
    first of ``stops``."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def cut(self, text: str) -> str:
        """``text`` up to the first stop sequence in it (all of it if none)."""
        ends = [i for s in self.stops if (i := text.find(s)) >= 0]
        if ends:
            self.stopped = True
            return text[: min(ends)]
        return text

    def feed(self, text: str) -> str:
        """What of the answer so far can be sent now that ``text`` came; nothing once stopped."""
        if self.stopped:
            return ""
        seen = self.cut(self._held + text)
        if self.stopped:
            self._held = ""
            return seen
        keep = self._partial(seen)
        self._held = seen[len(seen) - keep :] if keep else ""
        return seen[: len(seen) - keep]

    def flush(self) -> str:
        """The text held back at the end of the answer (it started no stop sequence)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial(self, text: str) -> int:
        """How many characters at the end of ``text`` begin a stop sequence."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
