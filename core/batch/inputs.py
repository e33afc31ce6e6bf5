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

Python's json module reads ``NaN``, ``Infinity`` and ``-Infinity`` (and turns a number too large
for a float, ``1e999``, into infinity); an item holding one would be copied into every record and
written back as such, which strict JSON readers (jq, JavaScript, Go) refuse. So such an item is
malformed like any other, named by its line and the token (``_Strict``). So is an item holding a
lone UTF-16 surrogate (``"\\ud83d"``: half of a pair, which UTF-8 cannot hold, so no record
holding it can be written), and one nested deeper than ``MAX_DEPTH`` (Python's reader, and every
later ``json.dumps`` of the record, give up somewhere near 1,000 levels, a little sooner the
deeper the caller's stack: a fixed limit refuses the same items in a dry run and in a run).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal, Protocol

from langgraph_moa.core.batch.ids import IdIndex
from langgraph_moa.nodes.errors import InputChangedError, InputError, ScratchError
from langgraph_moa.nodes.models.calls import SURROGATE_ESCAPE

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


def input_digest(item: Item) -> str:
    """What the models are asked for ``item`` (the messages before its turns, and its turns),
    hashed: each record keeps it, so a resume sees an item edited under its id since it was
    answered. Fields that ask nothing (``category``, ``reference``) are left out."""
    text = json.dumps([item.history, item.turns], ensure_ascii=False, separators=(",", ":"))
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


MAX_LINE = 16 << 20  # bytes per JSONL line, characters per JSON list item: one item's cap
MAX_DEPTH = 128  # objects and lists inside each other, in one item (the item itself is 1)
CHUNK = 1 << 20  # bytes read at a time from a JSON list
BATCH = 20_000  # ids handed to the index at a time (one executemany each)
BOM = b"\xef\xbb\xbf"


class Dataset:
    """The items of a JSONL file or a JSON list, read as a stream.

    Opening it reads the input once, checking every item (a malformed line or a repeated id is
    reported before any model is called) and keeping only the ids, on disk (core/batch/ids.py).
    Iterating reads it again, one item at a time: memory does not grow with the file or with
    the number of items (``--limit 10`` over 2 GB holds ten items). Stdin, which cannot be read
    twice, is copied to a temporary file on the first pass, and so is a pipe given by name
    (``<(...)``). ``close`` frees the ids. ``digests``: keep each item's ``input_digest`` too
    (a run that resumes an output compares them; a first run needs none, and may skip hashing).
    """

    def __init__(
        self,
        path: str,
        *,
        skip_invalid: bool = False,
        on_first_read: Callable[[Item], None] | None = None,
        digests: bool = True,
        malformed_if: Callable[[Item], None] | None = None,
    ) -> None:
        self.name = "stdin" if path == "-" else path
        self.skip_invalid = skip_invalid
        self._malformed_if = malformed_if
        self._digests = digests
        self.invalid = 0  # items that are not valid (only with skip_invalid: else an error)
        self._spool: IO[bytes] | None = None
        self._path = path
        self._index = IdIndex()
        try:
            if path == "-" or _is_pipe(path):  # <(...), /dev/stdin: read once, like stdin
                self._spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
                with contextlib.ExitStack() as stack:
                    source = (
                        sys.stdin.buffer if path == "-" else stack.enter_context(open_input(path))
                    )
                    try:
                        shutil.copyfileobj(source, self._spool)
                    except OSError as exc:
                        problem = exc.strerror or str(exc)
                        what = f"a copy of {self.name}"
                        raise ScratchError(tempfile.gettempdir(), what, problem) from None
            self._first_pass(on_first_read)
        except BaseException:
            self.close()
            raise

    def _first_pass(self, check: Callable[[Item], None] | None) -> None:
        unit, rows = "line", list[tuple[int, str, str | None]]()
        with self._open() as f:
            try:
                for number, unit, value in self._values(f):
                    item = self._parse(number, unit, value)
                    digest = None
                    if isinstance(item, InvalidItem):
                        self.invalid += 1
                        self._index.add_invalid(number)
                    else:
                        if check is not None:
                            check(item)
                        if self._digests:
                            digest = input_digest(item)
                    rows.append((number, item.id, digest))
                    if len(rows) == BATCH:
                        self._index.extend(rows)
                        rows.clear()
                self._index.extend(rows)
            except InputError:
                self._index.extend(rows)
                repeat = self._index.first_repeat()  # the first problem in the file is named
                if repeat is not None and not self.skip_invalid:
                    error = self._repeat_error(repeat.number, unit, repeat.item_id, repeat.first)
                    raise error from None
                raise
        if not len(self._index):
            raise InputError(f"{self.name}: no items (expected JSONL or a JSON list of objects)")
        if self.skip_invalid:
            self.invalid += self._index.mark_repeats(f"invalid-{unit}-")
        elif (repeat := self._index.first_repeat()) is not None:
            raise self._repeat_error(repeat.number, unit, repeat.item_id, repeat.first)

    def __len__(self) -> int:
        return len(self._index)

    def position(self, item_id: str) -> int | None:
        """Where the item ``item_id`` is (increasing in input order), or None if it is not here."""
        return self._index.number_of(item_id)

    def digests(self, item_ids: Sequence[str]) -> dict[str, str]:
        """The ``input_digest`` of each of the items ``item_ids`` that has one kept (none
        without ``digests``)."""
        return self._index.digests_of(item_ids)

    def invalid_at(self, number: int) -> bool:
        """Whether the item at ``number`` is recorded as failed (malformed, or a repeated id)."""
        seen = self._index.at(number)
        return seen is not None and seen[1] is not None

    def __iter__(self) -> Iterator[Item | InvalidItem]:
        with self._open() as f:
            for number, unit, value in self._values(f):
                try:
                    item = self._parse(number, unit, value)
                except InputError:  # the first pass read this line whole: it changed since
                    raise InputChangedError(self._changed) from None
                seen = self._index.at(number)
                if seen is not None and seen[1]:  # a repeated id (skip_invalid)
                    error = self._repeat_error(number, unit, item.id, seen[1])
                    yield InvalidItem(seen[0], error.problem, value, number)
                    continue
                if seen is None or seen[0] != item.id:
                    raise InputChangedError(self._changed)
                yield item

    @property
    def _changed(self) -> str:
        return f"{self.name} changed while the run was reading it: rerun the command to resume"

    def close(self) -> None:
        self._index.close()
        if self._spool is not None:
            self._spool.close()

    def _parse(self, number: int, unit: str, value: Any) -> Item | InvalidItem:
        try:
            if isinstance(value, _Malformed):
                raise ValueError(value.why)
            item = parse_item(value, number)
            if self._malformed_if is not None:
                self._malformed_if(item)
            return item
        except ValueError as exc:
            message = f"{self.name}: {unit} {number}: {exc}"
            if not self.skip_invalid:
                raise InputError(
                    message, hint="or pass --skip-invalid to record it as failed"
                ) from None
            source = value.line if isinstance(value, _Malformed) else value
            return InvalidItem(f"invalid-{unit}-{number}", message, source, number)

    def _repeat_error(self, number: int, unit: str, item_id: str, first: int) -> InputError:
        return InputError(
            f"{self.name}: {unit} {number}: id {item_id!r} is already the id of {unit} {first}; "
            'ids must be unique (give each item its own "id")',
            hint="or pass --skip-invalid to record it as failed",
        )

    @contextlib.contextmanager
    def _open(self) -> Iterator[IO[bytes]]:
        if self._spool is not None:
            self._spool.seek(0)
            yield self._spool
            return
        with open_input(self._path) as f:
            yield f

    def _values(self, f: IO[bytes]) -> Iterator[tuple[int, str, Any]]:
        """(number, "line" or "item", the JSON value or why it is not one) of each item."""
        if f.read(len(BOM)) != BOM:  # a UTF-8 byte-order mark (Windows tools write one)
            f.seek(0)
        first, newlines = f.read(1), 0
        while first and first.isspace():
            newlines += first == b"\n"
            first = f.read(1)
        if first == b"[":
            yield from ((n, "item", v) for n, v in _list_items(f, self.name))
            return
        strict = _Strict()
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
                value = strict.decode(text)
            except json.JSONDecodeError as exc:
                yield number, "line", _Malformed(text, f"not valid JSON ({exc.msg})")
                continue
            refused = strict.why()
            yield number, "line", _Malformed(text, refused) if refused else value


def _list_items(f: IO[bytes], name: str) -> Iterator[tuple[int, Any]]:
    """(place, value) of each item of a JSON list whose ``[`` was just read, one at a time.

    Written here rather than taken from a streaming parser (ijson): each item is parsed by
    ``json.JSONDecoder.raw_decode`` (``_Strict``), so it is exactly what a JSONL line of the same
    text gives (numbers, NaN, errors); and an item is capped at ``MAX_LINE`` characters like a
    line. The file is read in chunks into a window that holds the item being parsed; a window
    that ends inside an item grows (doubling) until the item fits.
    """
    strict = _Strict()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    text, at, done, read = "", 0, False, 1  # read: bytes of the file consumed (the "[")

    def more(at_least: int = 0) -> bool:
        nonlocal text, at, done, read
        if done:
            return False
        data = f.read(max(CHUNK, at_least))
        held = utf8.getstate()[0]
        try:
            chunk = utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            bad = (held + data)[exc.start]
            offset = read - len(held) + exc.start
            raise InputError(
                f"{name} (a JSON list) is not valid UTF-8: byte 0x{bad:02x} at offset {offset}"
            ) from None
        read += len(data)
        text, at, done = text[at:] + chunk, 0, not data
        return True

    def next_char() -> str:
        """The next character that is not white space ("" at the end), not consumed."""
        nonlocal at
        while True:
            while at < len(text) and text[at] in " \t\n\r":
                at += 1
            if at < len(text):
                return text[at]
            if not more():
                return ""

    def bad(number: int, why: str) -> InputError:
        return InputError(f"{name}: item {number}: not valid JSON ({why})")

    def too_long(number: int) -> InputError:
        return InputError(
            f"{name}: item {number} is longer than {MAX_LINE >> 20} MiB (the limit per item)"
        )

    if next_char() == "]":
        at += 1
    else:
        number = 0
        while True:
            number += 1
            next_char()
            while True:
                try:
                    value, end = strict.raw_decode(text, at)
                except _Cut:  # an item nested too deep, cut by the window: read more
                    held = len(text) - at
                    if held <= MAX_LINE and more(min(held, MAX_LINE + 1 - held)):
                        continue
                    if held > MAX_LINE:
                        raise too_long(number) from None
                    raise bad(number, "the file ends inside it") from None
                except json.JSONDecodeError as exc:
                    held = len(text) - at  # the window holds this much of the item
                    # The window may cut the item only where the error is at its end, or in
                    # a string still open (a cut literal, "tr|ue", fails a few characters
                    # before the end); any other error is the item's own, however big the list.
                    cut = exc.pos >= len(text) - 8 or exc.msg.startswith("Unterminated string")
                    if cut and held <= MAX_LINE and more(min(held, MAX_LINE + 1 - held)):
                        continue
                    if cut and held > MAX_LINE:
                        raise too_long(number) from None
                    raise bad(number, exc.msg) from None
                # A value that ends where the window ends may go on (a number cut in two).
                if end < len(text) or not more():
                    break
            if end - at > MAX_LINE:
                raise too_long(number)
            why = strict.why()
            yield number, _Malformed(text[at:end], why) if why else value
            at = end
            after = next_char()
            at += 1
            if after == "]":
                break
            if not after:
                raise InputError(f"{name}: not valid JSON: the list has no closing ']'")
            if after != ",":
                raise bad(number, "expected ',' or ']' after it")
    if next_char():
        raise InputError(f"{name}: not valid JSON: more data after the list's closing ']'")


class _Strict:
    """JSON as Python reads it, noting the first value strict JSON cannot hold: ``NaN``,
    ``Infinity``, ``-Infinity``, or a number too large for a float (``1e999`` reads as infinity);
    and an integer of more digits than Python converts (``int`` raises ValueError past 4300).

    Noted, not raised: a JSON list's item is still read to its end (and recorded as failed with
    ``skip_invalid``), and each decode starts clean (a list's item is decoded again when its
    window grows, and a number cut by the window may read as infinity only until then).
    """

    def __init__(self) -> None:
        self._token: str | None = None
        self._problem: str | None = None  # nested too deep, or a lone surrogate
        self._decoder = json.JSONDecoder(
            parse_constant=self._constant, parse_float=self._float, parse_int=self._int
        )

    def decode(self, text: str) -> Any:
        """The value of ``text``, or None without reading it when it is nested too deep (Python's
        reader would raise RecursionError, at a depth that depends on the caller's stack)."""
        self._token = self._problem = None
        if (depth := _depth(text, 0, len(text))) > MAX_DEPTH:
            self._problem = _too_deep(depth)
            return None
        value = self._decoder.decode(text)
        self._problem = _lone_surrogate(text, 0, len(text), value)
        return value

    def raw_decode(self, text: str, at: int) -> tuple[Any, int]:
        """The value starting at ``at`` and where it ends. One nested too deep for Python's
        reader is skipped (None, its end; ``_Cut`` when the window ends inside it)."""
        self._token = self._problem = None
        try:
            value, end = self._decoder.raw_decode(text, at)
        except RecursionError:
            closed = _container_end(text, at)
            if closed is None:
                raise _Cut from None
            self._problem = _too_deep(_depth(text, at, closed))
            return None, closed
        if (depth := _depth(text, at, end)) > MAX_DEPTH:
            self._problem = _too_deep(depth)
        else:
            self._problem = _lone_surrogate(text, at, end, value)
        return value, end

    def why(self) -> str | None:
        """What is wrong with the value last decoded, or None."""
        if self._problem is not None:
            return self._problem
        token = self._token
        if token is None:
            return None
        readers = "jq, JavaScript and Go refuse the records it would be copied into"
        if token in ("NaN", "Infinity", "-Infinity"):
            return f"{token} is not valid JSON (Python reads it, but {readers}): write null instead"
        shown = token if len(token) <= 24 else f"{token[:20]}..."
        if "." not in token and "e" not in token.lower():  # an integer Python will not read
            return (
                f"{shown} has {len(token.lstrip('-'))} digits, more than Python reads as a "
                "number: write it as a string instead"
            )
        return (
            f"{shown} is too large for a number (it would be written as Infinity, and {readers}): "
            "write null instead"
        )

    def _constant(self, token: str) -> None:
        self._token = self._token or token

    def _int(self, token: str) -> int:
        try:
            return int(token)
        except ValueError:  # over sys.get_int_max_str_digits() (4300): noted, not a traceback
            self._token = self._token or token
            return 0

    def _float(self, token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            self._token = self._token or token
        return value


class _Cut(Exception):
    """A JSON list's window ends inside an item too deep to read: read more of the file."""


_STRINGS_AND_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[^\[\]{}"]+', re.S)
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1, '"': 0}  # '"': a string left open (not JSON)
_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|["\[\]{}]', re.S)


def _depth(text: str, start: int, end: int) -> int:
    """How deep objects and lists nest in ``text[start:end]`` (strings skipped). Counting the
    brackets first keeps it cheap: an item can nest no deeper than it has brackets."""
    if text.count("[", start, end) + text.count("{", start, end) <= MAX_DEPTH:
        return 0  # deep enough to read, whatever it holds
    brackets = _STRINGS_AND_TEXT.sub("", text[start:end])
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _container_end(text: str, at: int) -> int | None:
    """Where the object or list starting at ``at`` ends, or None if ``text`` ends first."""
    depth = 0
    for match in _BRACKETS.finditer(text, at):
        token = match.group()
        if token == '"':  # a string the window cuts
            return None
        if len(token) > 1:  # a whole string
            continue
        depth += _STEP[token]
        if depth == 0:
            return match.end()
    return None


def _too_deep(depth: int) -> str:
    return (
        f"objects and lists nested {depth:,} deep, more than the {MAX_DEPTH} an item may nest "
        "(Python's JSON reader gives up near 1,000): flatten it, or store it as a string"
    )


def _lone_surrogate(text: str, start: int, end: int, value: Any) -> str | None:
    """What is wrong if ``value`` (read from ``text[start:end]``) holds a lone UTF-16 surrogate:
    only a ``\\uD8xx``-``\\uDFxx`` escape makes one (UTF-8 bytes cannot), and UTF-8 cannot
    write it back, so every record holding it would fail to be written."""
    if not SURROGATE_ESCAPE.search(text, start, end):
        return None
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        escape = f"\\u{ord(exc.object[exc.start]):04x}"
        return (
            f"{escape} is a lone UTF-16 surrogate (half of a pair such as \\ud83d\\ude00), "
            "which UTF-8 cannot hold, so no record of this item could be written: remove it "
            "or write the whole pair"
        )
    return None


def _is_pipe(path: str) -> bool:
    """Whether ``path`` is a pipe (``<(...)``, ``/dev/stdin`` fed by one): it reads only once."""
    with contextlib.suppress(OSError):
        return stat.S_ISFIFO(os.stat(path).st_mode)
    return False


def open_input(path: str) -> IO[bytes]:
    """The input file, opened to read, or one ``InputError`` naming it."""
    try:
        return open(path, "rb")  # the caller closes it
    except OSError as exc:
        raise _unreadable(path, exc) from None


def check_input(path: str) -> None:
    """Refuse an input file that cannot be opened, without reading it (nor waiting for a pipe's
    writer: O_NONBLOCK)."""
    if _is_pipe(path):
        # Not opened: a named pipe's writer would take that open as its reader, write to it,
        # and be gone when the real read comes (the run then waits for a writer forever).
        if not os.access(path, os.R_OK):
            raise _unreadable(path, PermissionError(13, "Permission denied"))
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        is_folder = stat.S_ISDIR(os.fstat(fd).st_mode)  # a folder opens on POSIX
    finally:
        os.close(fd)
    if is_folder:
        raise InputError(f"input file {path!r} is a folder: name a file of items in it")


def _unreadable(path: str, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(f"input file {path!r} not found")
    return InputError(f"input file {path!r} cannot be read: {exc}")


def stream_items(
    path: str,
    *,
    skip_invalid: bool = False,
    on_first_read: Callable[[Item], None] | None = None,
    digests: bool = True,
    malformed_if: Callable[[Item], None] | None = None,
) -> Dataset:
    """The items of ``path`` (``-``: stdin), checked, read one at a time when iterated.

    ``on_first_read``: called on each valid item as the first pass reads it (a format's own checks,
    core/batch/formats.py), so they cost no pass of their own; what it raises stops the read.
    ``malformed_if``: called on each item as it is parsed, in every pass; a ``ValueError`` makes the
    item malformed like any other (named by its line; ``skip_invalid``: recorded failed), so it
    must say the same of an item every time (core/batch/fits.py: too long for every model).
    ``digests``: keep each item's ``input_digest``, so that a resumed output's edited items are
    refused (``Dataset``); ``moa batch`` leaves them out when there is no output to resume.
    """
    return Dataset(
        path,
        skip_invalid=skip_invalid,
        on_first_read=on_first_read,
        digests=digests,
        malformed_if=malformed_if,
    )


def read_items(path: str, *, skip_invalid: bool = False) -> list[Item | InvalidItem]:
    """Every item of ``path`` (``-``: stdin), in order, in memory; ids checked for duplicates."""
    dataset = stream_items(path, skip_invalid=skip_invalid)
    try:
        return list(dataset)
    finally:
        dataset.close()


class Positions(Protocol):
    """Where each id of a run's items is: the output is put in that order at the end."""

    def __len__(self) -> int: ...  # items (each with its own id)

    def position(self, item_id: str) -> int | None: ...  # None: no item has that id

    # The input_digest of each of these items that has one known (not: no such item, a
    # malformed one, or digests not kept), looked up together (a resume asks for every record's).
    def digests(self, item_ids: Sequence[str]) -> dict[str, str]: ...


class _Listed:
    """The positions of items held in a list."""

    def __init__(self, items: Iterable[Item | InvalidItem]) -> None:
        self._at: dict[str, int] = {}
        self._items: dict[str, Item] = {}
        for n, item in enumerate(items):
            self._at.setdefault(item.id, n)
            if isinstance(item, Item):
                self._items.setdefault(item.id, item)

    def __len__(self) -> int:
        return len(self._at)

    def position(self, item_id: str) -> int | None:
        return self._at.get(item_id)

    def digests(self, item_ids: Sequence[str]) -> dict[str, str]:
        return {i: input_digest(self._items[i]) for i in item_ids if i in self._items}


class Streamed(Positions, Protocol):
    """Items read as they are needed (a ``Dataset``, its ``Sampled`` view), which know their
    positions without being read again."""

    def __iter__(self) -> Iterator[Item | InvalidItem]: ...


Items = Sequence[Item | InvalidItem] | Streamed  # what a run takes: a list, or a stream


def positions_of(items: Items) -> Positions:
    """Where each id of ``items`` is."""
    return _Listed(items) if isinstance(items, Sequence) else items


@dataclass(frozen=True)
class _Malformed:
    line: str
    why: str
