"""Live progress of the proposer layers, on stderr only (stdout carries the answer)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.records import failure_note


def short(model: str) -> str:
    """'together:Qwen/Qwen2-72B-Instruct' -> 'Qwen2-72B-Instruct'."""
    return model.split(":", 1)[-1].rsplit("/", 1)[-1]


class Progress:
    """Shows which proposers finished and the elapsed time; a line per event when not a TTY."""

    def __init__(self, ctx: Context, console: Console) -> None:
        self.ctx = ctx
        self.console = console
        self.start = time.perf_counter()
        self.done: dict[int, list[dict[str, Any]]] = {}
        self.layer = 1
        self.live: Live | None = None
        self.resumed: list[str] = []  # answers continued after a break, said after the answer

    def __enter__(self) -> Progress:
        if self.console.is_terminal and self.ctx.proposer_layers:
            self.live = Live(
                self._render(),
                console=self.console,
                transient=True,
                refresh_per_second=8,
                get_renderable=self._render,
            )
            self.live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _render(self) -> Text:
        total = len(self.ctx.proposers_of(self.layer))
        done = self.done.get(self.layer, [])
        names = ", ".join(
            f"{short(p['model'])} {'✓' if p['text'] is not None else '✗'}" for p in done
        )
        return Text(
            f"layer {self.layer}/{self.ctx.proposer_layers}: {len(done)}/{total} proposers done"
            f"{' · ' + names if names else ''} · {self.elapsed():.1f} s"
        )

    def proposal(self, event: dict[str, Any]) -> None:
        layer = int(event["layer"])
        self.layer = layer
        done = self.done.setdefault(layer, [])
        done.append(event)
        total = len(self.ctx.proposers_of(layer))
        if self.live is None:
            status = "done" if event["text"] is not None else "failed"
            self.console.print(
                f"moa: layer {layer}/{self.ctx.proposer_layers} · {len(done)}/{total} · "
                f"{event['model']} {status} in {event['latency_s']:.2f} s "
                f"({self.elapsed():.1f} s elapsed)",
                highlight=False,
                markup=False,  # model names may contain [brackets]
            )
        if len(done) == total:
            self._layer_finished(layer, done, total)
            if layer < self.ctx.proposer_layers:
                self.layer = layer + 1

    def answer_restarted(self, event: dict[str, Any], *, streamed: bool) -> None:
        """The final answer starts over: a retry of the aggregator, or its fallback."""
        again = "; the answer starts over on the next line" if streamed else ""
        if event["event"] == "answer_fallback":
            line = (
                f"moa: aggregator {event['failed_model']} failed ({event['message']}); "
                f"fallback {event['model']} answers{again}"
            )
        elif streamed:
            line = f"moa: the answer from {event['model']} broke off ({event['message']}){again}"
        else:
            return  # nothing shown yet: a retry before the first token needs no notice
        self.console.print(line, highlight=False, markup=False)

    def answer_resumed(self, event: dict[str, Any]) -> None:
        """The answer broke off and its retry (or the fallback) continues it where it stopped."""
        if event["event"] == "answer_fallback":
            self.resumed.append(
                f"moa: aggregator {event['failed_model']} failed ({event['message']}); "
                f"fallback {event['model']} continued the answer where it stopped"
            )
        else:
            self.resumed.append(
                f"moa: the answer from {event['model']} broke off ({event['message']}); "
                "it was continued where it stopped"
            )

    def resumed_notes(self, *, line_open: bool) -> None:
        """Say which answers were continued (``line_open``: the answer's last line has no line
        break yet; on a terminal the notes start on a line of their own)."""
        if self.resumed and line_open and self.console.is_terminal:
            self.console.print()
        for line in self.resumed:
            self.console.print(line, highlight=False, markup=False)
        self.resumed.clear()

    def _layer_finished(self, layer: int, done: list[dict[str, Any]], total: int) -> None:
        failed = [p for p in done if p["text"] is None]
        # A layer with too few answers fails, and its error names every failure: saying them
        # here too would print each reason twice.
        if failed and total - len(failed) >= min(self.ctx.min_proposals, total):
            why = "; ".join(
                f"{short(p['model'])} "
                + failure_note(
                    p["error"]["message"] if p["error"] else "failed", p["attempts"], p["latency_s"]
                )
                for p in failed
            )
            self.console.print(
                f"moa: layer {layer}: {total - len(failed)}/{total} proposals; {why}",
                highlight=False,
                markup=False,
            )
