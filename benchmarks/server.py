"""The fake OpenAI-compatible server in a child process, driven over a JSON-lines pipe.

In its own process the server's event loop never waits for the client's CPU (the openai client
costs ~8 ms of CPU per request), so the latencies it scripts are the latencies clients see.

Child: ``python -m benchmarks.server`` prints ``{"base_url": ...}`` and then answers one JSON
line per command read on stdin: ``script``, ``rate_limit``, ``reset``, ``requests``, ``quit``.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    """Parent side: start the child, script models, read its request records."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.base_url = self._read()["base_url"]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is None:
            return
        try:
            self.call("quit")
            self.proc.wait(timeout=15)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _read(self) -> Any:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fake server process exited")
        return json.loads(line)

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def script(
        self,
        model: str,
        reply: str,
        *,
        ttft: float = 0.0,
        token_delay: float = 0.0,
        tail: tuple[float, float, int] | None = None,
        continues: bool = False,
    ) -> None:
        """``tail=(p, factor, seed)``: with chance p a request takes ``factor`` times as long
        (its first token comes later by ``(factor - 1)`` x the whole call's time).
        ``continues``: a request continuing an answer (staircase streaming, either way it is
        asked) gets the rest of ``reply`` (tests/fake_openai.py ``continuing``)."""
        self.call(
            "script",
            model=model,
            reply=reply,
            ttft=ttft,
            token_delay=token_delay,
            tail=tail,
            continues=continues,
        )

    def rate_limit(self, requests_per_s: float | None) -> None:
        """Answer 429 above ``requests_per_s`` per model (FakeOpenAIServer.rate_limit)."""
        self.call("rate_limit", requests_per_s=requests_per_s)

    def reset(self) -> None:
        self.call("reset")

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("requests")
        return result


def _serve() -> None:
    from tests.fake_openai import (
        FakeOpenAIServer,
        RecordedRequest,
        continuing,
        final_assistant_prefill,
        split_tokens,
    )

    so_far = re.compile(r"<answer_so_far>\n(.*)</answer_so_far>", re.DOTALL)

    def answer_so_far(record: RecordedRequest) -> str | None:
        """Either way of continuing (nodes/models/continuation.py): provider or fallback."""
        found = so_far.search(str(record.messages[0].get("content"))) if record.messages else None
        return found.group(1) if found else final_assistant_prefill(record)

    def tail_latency(ttft: float, total: float, p: float, factor: float, seed: int) -> Any:
        rng = random.Random(seed)  # drawn on the server thread, in arrival order
        slow = ttft + (factor - 1) * total
        return lambda: slow if rng.random() < p else ttft

    with FakeOpenAIServer() as server:
        print(json.dumps({"base_url": server.base_url}), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd.pop("op")
            answer: Any = {"ok": True}
            if op == "script":
                tail = cmd.pop("tail")
                continues = cmd.pop("continues", False)
                total = cmd["ttft"] + (len(split_tokens(cmd["reply"])) - 1) * cmd["token_delay"]
                latency = tail_latency(cmd["ttft"], total, *tail) if tail else None
                server.script(
                    cmd["model"],
                    continuing(cmd["reply"], answer_so_far) if continues else cmd["reply"],
                    ttft=cmd["ttft"],
                    token_delay=cmd["token_delay"],
                    latency=latency,
                )
            elif op == "rate_limit":
                server.rate_limit(cmd["requests_per_s"])
            elif op == "reset":
                server.wait_idle(10.0)
                server.reset()
            elif op == "requests":
                server.wait_idle(10.0)
                answer = [
                    {
                        "model": r.model,
                        "started": r.started,
                        "status": r.status,
                        "finished": r.finished,
                        "disconnected": r.disconnected,
                        "chunks_sent": r.chunks_sent,
                        "stream": r.stream,
                    }
                    for r in list(server.requests)
                ]
            elif op == "quit":
                print(json.dumps(answer), flush=True)
                break
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    _serve()
