"""Reading a dataset: JSONL, a JSON list, or stdin; each item one of four shapes.

- ``{"prompt": "..."}``
- ``{"messages": [{"role": "user", "content": "..."}, ...]}`` (the last message is the user's)
- ``{"instruction": "...", "input": "..."?}`` (AlpacaEval; Alpaca's optional ``input`` is appended)
- ``{"question_id": 81, "turns": ["...", "..."]}`` (MT-Bench: each turn is asked after the
  previous turn's answer)

An item's id is its ``id``, else its ``question_id``, else a hash of its content. Other fields
(``dataset``, ``category``...) are kept in the record's ``input``. A malformed line raises
``InputError`` naming its line (item, for a JSON list); with ``skip_invalid`` it becomes an
``InvalidItem`` that the run records as failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from langgraph_moa.nodes.errors import InputError

Kind = Literal["prompt", "messages", "instruction", "mt-bench"]
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Item:
    """One dataset item, ready to ask."""

    id: str
    kind: Kind
    turns: list[str]  # user messages asked one after another (several for MT-Bench)
    history: list[dict[str, str]] = field(default_factory=list)  # messages before the 1st turn
    source: dict[str, Any] = field(default_factory=dict)  # the item as given
    line: int = 0  # where it was read (1-based line, or position in a JSON list)
    sample: int | None = None  # which of --samples K this is (its id then ends in #sK)


@dataclass(frozen=True)
class InvalidItem:
    """A malformed item kept (with ``skip_invalid``) so the run records it as failed."""

    id: str
    error: str
    source: Any
    line: int


def content_id(source: Any) -> str:
    """The id of an item without one: a hash of its content."""
    text = json.dumps(source, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} is empty")
    return value


def parse_item(source: Any, line: int = 0) -> Item:
    """One item from its JSON value; ``ValueError`` says what is wrong with it."""
    if not isinstance(source, dict):
        raise ValueError(f"an item must be a JSON object, not {type(source).__name__}")
    given = source.get("id", source.get("question_id"))
    if given is not None and (isinstance(given, bool) or not isinstance(given, str | int)):
        raise ValueError("id must be a string or an integer")
    item_id = str(given) if given is not None else content_id(source)
    if "turns" in source:
        turns = source["turns"]
        if not isinstance(turns, list) or not turns:
            raise ValueError("turns must be a non-empty list of strings")
        texts = [_text(t, f"turns[{i}]") for i, t in enumerate(turns)]
        return Item(item_id, "mt-bench", texts, [], source, line)
    if "messages" in source:
        messages = source["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {role, content} objects")
        checked = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                raise ValueError(f"messages[{i}] must be an object with role one of {ROLES}")
            checked.append(
                {"role": m["role"], "content": _text(m.get("content"), f"messages[{i}].content")}
            )
        if checked[-1]["role"] != "user":
            raise ValueError("the last of messages must be the user's (role 'user')")
        return Item(item_id, "messages", [checked[-1]["content"]], checked[:-1], source, line)
    if "instruction" in source:
        text = _text(source["instruction"], "instruction")
        extra = source.get("input")
        if isinstance(extra, str) and extra.strip():
            text = f"{text}\n\n{extra}"
        return Item(item_id, "instruction", [text], [], source, line)
    if "prompt" in source:
        return Item(item_id, "prompt", [_text(source["prompt"], "prompt")], [], source, line)
    raise ValueError(
        "no prompt: an item needs one of 'prompt', 'messages', 'instruction' (AlpacaEval) "
        "or 'turns' with 'question_id' (MT-Bench)"
    )


MAX_LINE = 16 << 20  # bytes per JSONL line (one item); a longer line is refused, not read on
MAX_LIST = 256 << 20  # bytes of a JSON list, which is parsed whole (use JSONL for more)
BOM = b"\xef\xbb\xbf"


class Dataset:
    """The items of a JSONL file or a JSON list, read as a stream.

    Opening it reads the input once, checking every item (a malformed line is reported before
    any model is called) and keeping only the ids. Iterating reads it again, one item at a time:
    memory does not grow with the file (``--limit 10`` over 2 GB holds ten items). Stdin, which
    cannot be read twice, is copied to a temporary file on the first pass.
    """

    def __init__(self, path: str, *, skip_invalid: bool = False) -> None:
        self.name = "stdin" if path == "-" else path
        self.skip_invalid = skip_invalid
        self._spool: IO[bytes] | None = None
        self._path = path
        if path == "-":
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the Dataset)
            shutil.copyfileobj(sys.stdin.buffer, self._spool)
        self.ids: list[str] = []
        self._invalid: dict[int, InvalidItem] = {}  # by position: what the first pass refused
        for item in self._read():
            if isinstance(item, InvalidItem):
                self._invalid[len(self.ids)] = item
            self.ids.append(item.id)
        if not self.ids:
            raise InputError(f"{self.name}: no items (expected JSONL or a JSON list of objects)")

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Item | InvalidItem]:
        for n, item in enumerate(self._read(check=False)):
            if n in self._invalid:
                yield self._invalid[n]  # e.g. a duplicate id, which only the first pass sees
                continue
            if n >= len(self.ids) or item.id != self.ids[n]:
                raise InputError(f"{self.name} changed while the run was reading it")
            yield item

    @contextlib.contextmanager
    def _open(self) -> Iterator[IO[bytes]]:
        if self._spool is not None:
            self._spool.seek(0)
            yield self._spool
            return
        try:
            f = open(self._path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            raise InputError(f"input file {self._path!r} not found") from None
        except OSError as exc:
            raise InputError(f"input file {self._path!r} cannot be read: {exc}") from None
        with f:
            yield f

    def _read(self, check: bool = True) -> Iterator[Item | InvalidItem]:
        seen: dict[str, int] = {}
        with self._open() as f:
            for number, unit, value in self._values(f):
                try:
                    if isinstance(value, _Malformed):
                        raise ValueError(value.why)
                    item: Item | InvalidItem = parse_item(value, number)
                    if check and item.id in seen:
                        raise ValueError(
                            f"id {item.id!r} is already the id of {unit} {seen[item.id]}; ids "
                            'must be unique (give each item its own "id")'
                        )
                except ValueError as exc:
                    message = f"{self.name}: {unit} {number}: {exc}"
                    if not self.skip_invalid:
                        raise InputError(
                            message, hint="or pass --skip-invalid to record it as failed"
                        ) from None
                    source = value.line if isinstance(value, _Malformed) else value
                    item = InvalidItem(f"invalid-{unit}-{number}", message, source, number)
                if check:
                    seen[item.id] = number
                yield item

    def _values(self, f: IO[bytes]) -> Iterator[tuple[int, str, Any]]:
        """(number, "line" or "item", the JSON value or why it is not one) of each item."""
        if f.read(len(BOM)) != BOM:  # a UTF-8 byte-order mark (Windows tools write one)
            f.seek(0)
        first, newlines = f.read(1), 0
        while first and first.isspace():
            newlines += first == b"\n"
            first = f.read(1)
        if first == b"[":
            data = b"[" + f.read(MAX_LIST)
            if f.read(1):
                raise InputError(
                    f"{self.name}: a JSON list larger than {MAX_LIST >> 20} MiB; write the items "
                    "as JSONL (one per line), which is read as a stream"
                )
            try:
                values = json.loads(_decoded(data, f"{self.name} (a JSON list)"))
            except json.JSONDecodeError as exc:
                raise InputError(f"{self.name}: not valid JSON: {exc}") from None
            if not isinstance(values, list):
                raise InputError(f"{self.name}: not valid JSON: expected a list")
            yield from ((i, "item", v) for i, v in enumerate(values, 1))
            return
        pending = first
        number = newlines
        while True:
            # Lines end at \n only: U+2028, U+2029 and U+0085 are text inside JSON strings.
            line = pending + f.readline(MAX_LINE + 1)
            pending = b""
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                raise InputError(
                    f"{self.name}: line {number} is longer than {MAX_LINE >> 20} MiB (the limit "
                    "per item): is this a JSONL file?"
                )
            if not line.strip():
                continue
            line = line.rstrip(b"\r\n")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                why = f"not valid UTF-8: byte 0x{line[exc.start]:02x} at offset {exc.start}"
                yield number, "line", _Malformed(line.decode("utf-8", "replace"), why)
                continue
            try:
                yield number, "line", json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, "line", _Malformed(text, f"not valid JSON ({exc.msg})")


def _decoded(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None


def stream_items(path: str, *, skip_invalid: bool = False) -> Dataset:
    """The items of ``path`` (``-``: stdin), checked, read one at a time when iterated."""
    return Dataset(path, skip_invalid=skip_invalid)


def read_items(path: str, *, skip_invalid: bool = False) -> list[Item | InvalidItem]:
    """Every item of ``path`` (``-``: stdin), in order, in memory; ids checked for duplicates."""
    return list(stream_items(path, skip_invalid=skip_invalid))


Items = Sequence[Item | InvalidItem] | Dataset  # what a run takes: a list, or a streamed file


def ids_of(items: Items) -> list[str]:
    """The ids of ``items``, in order (a Dataset knows them without reading the file again)."""
    return list(items.ids) if isinstance(items, Dataset) else [i.id for i in items]


@dataclass(frozen=True)
class _Malformed:
    line: str
    why: str
