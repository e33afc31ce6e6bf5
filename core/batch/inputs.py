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

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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


def read_items(path: str, *, skip_invalid: bool = False) -> list[Item | InvalidItem]:
    """Every item of ``path`` (``-``: stdin), in order; ids checked for duplicates."""
    text = _read(path)
    name = "stdin" if path == "-" else path
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}: not valid JSON: {exc}") from None
        raw: list[tuple[int, str, Any]] = [(i, "item", v) for i, v in enumerate(values, 1)]
    else:
        raw = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw.append((number, "line", json.loads(line)))
            except json.JSONDecodeError as exc:
                raw.append((number, "line", _Malformed(line, f"not valid JSON ({exc.msg})")))
    items: list[Item | InvalidItem] = []
    seen: dict[str, int] = {}
    for number, unit, value in raw:
        try:
            if isinstance(value, _Malformed):
                raise ValueError(value.why)
            item: Item | InvalidItem = parse_item(value, number)
            if item.id in seen:
                raise ValueError(
                    f"id {item.id!r} is already the id of {unit} {seen[item.id]}; ids must be "
                    'unique (give each item its own "id")'
                )
        except ValueError as exc:
            message = f"{name}: {unit} {number}: {exc}"
            if not skip_invalid:
                raise InputError(
                    f"{message} (or pass --skip-invalid to record it as failed)"
                ) from None
            source = value.line if isinstance(value, _Malformed) else value
            item = InvalidItem(f"invalid-{unit}-{number}", message, source, number)
        seen[item.id] = number
        items.append(item)
    if not items:
        raise InputError(f"{name}: no items (expected JSONL or a JSON list of objects)")
    return items


@dataclass(frozen=True)
class _Malformed:
    line: str
    why: str


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"input file {path!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"input file {path!r} cannot be read: {exc}") from None
