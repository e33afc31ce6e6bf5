"""Progress of a batch run on stderr, and the summary at its end.

On a terminal: a rich progress bar (done/total, items per minute, ETA, tokens, cost so far,
failures). Otherwise (a log, CI, a pipe): a plain line every ``LINE_EVERY`` of the items or every
``LINE_EVERY_S`` seconds, whichever comes first, and one at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from langgraph_moa.core.batch.cost import Prices, cost_of
from langgraph_moa.core.batch.records import call_kinds

LINE_EVERY = 0.1
LINE_EVERY_S = 60.0


def money(usd: float | None) -> str:
    if usd is None:
        return "n/a"
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


@dataclass
class ModelTotals:
    calls: int = 0  # calls this run paid for (answered or failed)
    cached: int = 0  # calls answered from the call cache (no request)
    replayed: int = 0  # stored proposals reused by --replay (no request)
    requests: int = 0  # HTTP requests made (retries included)
    input_tokens: int = 0  # of the paid calls
    output_tokens: int = 0


class BatchProgress:
    """Counts what finished items used; shows it while the run goes and sums it up at the end."""

    def __init__(self, console: Console, *, total: int, to_run: int, prices: Prices) -> None:
        self.console = console
        self.total = total
        self.to_run = to_run
        self.before = total - to_run  # finished in an earlier run
        self.prices = prices
        self.done = 0
        self.failed = 0
        self.degraded = 0  # answered with fewer proposals than configured
        self.tokens = 0
        self.models: dict[str, ModelTotals] = {}
        self.start = time.perf_counter()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = (0, self.start)

    def __enter__(self) -> Self:
        if self.console.is_terminal and self.to_run:
            self._bar = Progress(
                TextColumn("moa batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "", total=self.total, completed=self.before, status=self.status()
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    # ---------------------------------------------------------------- counting
    def spent(self) -> float | None:
        usage = {
            m: {"input_tokens": t.input_tokens, "output_tokens": t.output_tokens}
            for m, t in self.models.items()
        }
        return cost_of(usage, self.prices)

    def record(self, record: dict[str, Any]) -> None:
        """Count a finished item."""
        self.done += 1
        self.failed += record["status"] == "failed"
        self.degraded += record["status"] == "degraded"
        for call, kind in call_kinds(record["turns"], record.get("failed_turn_calls") or ()):
            row = self.models.setdefault(call["model"], ModelTotals())
            if kind == "cached":
                row.cached += 1
                continue
            if kind == "replayed":
                row.replayed += 1
                continue
            row.calls += 1
            row.requests += int(call["attempts"])
            usage = call["usage"] or {}
            row.input_tokens += int(usage.get("input_tokens", 0))
            row.output_tokens += int(usage.get("output_tokens", 0))
            self.tokens += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
        self._show()

    def cached_calls(self) -> int:
        return sum(t.cached for t in self.models.values())

    # ---------------------------------------------------------------- showing
    def rate(self) -> float:
        """Items per minute in this run."""
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed * 60 if elapsed > 0 else 0.0

    def status(self) -> str:
        left = self.to_run - self.done
        rate = self.rate()
        eta = duration(left / rate * 60) if rate > 0 and left else ("-" if left else "0s")
        return (
            f"{rate:,.1f} items/min · ETA {eta} · {self.tokens:,} tokens · "
            f"spent {money(self.spent())} · {self.failed} failed"
            + (f" · {self.degraded} degraded" if self.degraded else "")
        )

    def line(self) -> str:
        finished = self.before + self.done
        share = finished / self.total if self.total else 1.0
        return f"moa batch: {finished}/{self.total} items ({share:.0%}) · {self.status()}"

    def _show(self) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, status=self.status())
            return
        count, at = self._last_line
        now = time.perf_counter()
        step = max(1, int(self.to_run * LINE_EVERY))
        if self.done - count >= step or now - at >= LINE_EVERY_S or self.done == self.to_run:
            self.console.print(self.line(), highlight=False, markup=False)
            self._last_line = (self.done, now)

    def summary(self) -> str:
        """Totals per model: paid calls, their requests, tokens and spend, then the calls reused
        without a request (cached, replayed) on their own (plain, aligned text: it goes to logs
        as often as to terminals)."""
        elapsed = time.perf_counter() - self.start
        head = (
            f"moa batch: {self.done} items in {duration(elapsed)} ({self.rate():,.1f}/min): "
            f"{self.done - self.failed - self.degraded} ok, {self.degraded} degraded, "
            f"{self.failed} failed"
        )
        rows: list[tuple[str, ...]] = [
            (
                "model",
                "paid calls",
                "requests",
                "input tokens",
                "output tokens",
                "spent",
                "cached",
                "replayed",
            )
        ]
        for model, t in sorted(self.models.items()):
            spent = {"input_tokens": t.input_tokens, "output_tokens": t.output_tokens}
            rows.append(_row(model, [t], money(cost_of({model: spent}, self.prices))))
        rows.append(_row("total", list(self.models.values()), money(self.spent())))
        widths = [max(len(r[n]) for r in rows) for n in range(len(rows[0]))]
        lines = [
            "  "
            + "  ".join(
                c.ljust(w) if n == 0 else c.rjust(w)
                for n, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        return "\n".join([head, *lines])


def _row(name: str, totals: list[ModelTotals], cost: str) -> tuple[str, ...]:
    return (
        name,
        f"{sum(t.calls for t in totals):,}",
        f"{sum(t.requests for t in totals):,}",
        f"{sum(t.input_tokens for t in totals):,}",
        f"{sum(t.output_tokens for t in totals):,}",
        cost,
        f"{sum(t.cached for t in totals):,}",
        f"{sum(t.replayed for t in totals):,}",
    )
