"""Stop sequences (OpenAI's ``stop``, LangChain's ``stop=``): the answer ends before the first.

Honoured on the answer the client gets, whatever the aggregator's provider does with stop
sequences (the local model has none; a continued answer is written by several calls): the text
is cut where a sequence first appears, the sequence left out, as OpenAI does. A client that
relies on it (a ReAct-style agent stops the model before it writes the tool's "Observation:"
itself) would otherwise get text past the point it asked for, silently. ``moa serve`` and
``ChatMoA`` both cut here.

Streamed, a piece of text that may be the start of a stop sequence is held until the next token
says whether it is one, so a sequence split across tokens is still caught and never sent.
"""

from __future__ import annotations

from collections.abc import Sequence


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
