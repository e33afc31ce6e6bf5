"""JSON schemas of bound tools and response formats: checked when bound, and the aggregator's
answers checked against them (``jsonschema``; imported by nodes/models/tools.py only when a run
binds a schema, so the import costs nothing to the runs that bind none).

What a client's schema may not do to the server: fetch a ``$ref`` (only refs into the schema
itself resolve), or run its regular expressions on what the model writes (ReDoS).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import extend, validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012


@functools.lru_cache(maxsize=512)
def schema_error(text: str) -> str | None:
    # Cached by the schema's text: checking one takes about 1.5 ms, and clients send the same
    # tools on every request (Open WebUI attaches 36; an agent binds its tools at each step).
    schema = json.loads(text)
    try:
        validator = validator_for(schema, default=Draft202012Validator)
        # With the format checker, as jsonschema's check_schema: a pattern must be a regex.
        meta = validator(validator.META_SCHEMA, format_checker=validator.FORMAT_CHECKER)
        error = best_match(meta.iter_errors(schema))
    except RecursionError:
        return "nested too deeply"
    if error is not None:
        message = error.message if len(error.message) <= 200 else f"{error.message[:197]}..."
        path = "/".join(str(p) for p in error.absolute_path)
        return f"{message} (at {path})" if path else message
    resolver = NO_RETRIEVAL.with_resource(ROOT, DRAFT202012.create_resource(schema)).resolver(ROOT)
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            return f"$ref {ref[:77]!r} points to nothing in the schema (only local '#/...' refs)"
    try:
        loop = _ref_loop(schema, resolver)
    except RecursionError:
        return "its $refs are chained too deeply"
    if loop is not None:
        return (
            f"$ref {loop[:77]!r} leads back to itself before any property or item of the value: "
            "no value could be checked against it"
        )
    return None


def root_schema(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema a value is checked against at the root: ``schema``, or where its root ``$ref``
    points (pydantic writes a recursive model as ``{"$defs": ..., "$ref": "#/$defs/Model"}``),
    for a schema ``schema_error`` passed."""
    resolver = NO_RETRIEVAL.with_resource(ROOT, DRAFT202012.create_resource(schema)).resolver(ROOT)
    node: Any = schema
    for _ in range(MAX_ROOT_REFS):
        ref = node.get("$ref") if isinstance(node, Mapping) else None
        if not isinstance(ref, str):
            break
        resolved = resolver.lookup(ref)
        node, resolver = resolved.contents, resolved.resolver
    return node if isinstance(node, Mapping) else {}


MAX_ROOT_REFS = 16  # past them, a chain of refs is a loop (schema_error refuses one)

# jsonschema fetches a $ref it cannot resolve by URL (http:, file:) unless given a registry:
# a client's schema must not make the server read a URL or a file. Refs point into the schema.
NO_RETRIEVAL: Registry[Any] = Registry()
ROOT = "urn:moa:schema"


REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key in REF_KEYS:
            if isinstance(node.get(key), str):
                yield node[key]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _in_place_refs(node: Any) -> Iterator[str]:
    """The refs a value checked against ``node`` is checked against too, as it is (not one of
    its properties or items): ``node``'s own and those of the subschemas that apply to the whole
    value (``allOf``, ``not``, ``if``...)."""
    if not isinstance(node, Mapping):
        return
    for key in REF_KEYS:
        if isinstance(node.get(key), str):
            yield node[key]
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            for sub in node[key]:
                yield from _in_place_refs(sub)
    for key in ("not", "if", "then", "else"):
        yield from _in_place_refs(node.get(key))
    if isinstance(node.get("dependentSchemas"), Mapping):
        for sub in node["dependentSchemas"].values():
            yield from _in_place_refs(sub)


def _subschemas(node: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(node, Mapping):
        yield node
        for value in node.values():
            yield from _subschemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _subschemas(value)


def _ref_loop(schema: Mapping[str, Any], resolver: Any) -> str | None:
    """A ref that leads back to itself before the value is gone into (``{"$defs": {"a": {"$ref":
    "#/$defs/a"}}}``), or None: checking a value against it would never end (RecursionError,
    once the aggregator's answer is paid for). A recursive schema whose refs go into properties
    or items (a tree) ends with the value, and is fine."""
    done: set[int] = set()  # subschemas from which no loop starts
    path: set[int] = set()  # those being followed

    def follow(node: Any, here: Any) -> str | None:
        for ref in _in_place_refs(node):
            try:
                resolved = here.lookup(ref)
            except Unresolvable:
                continue  # checked by the caller
            target = resolved.contents
            if id(target) in path:
                return ref
            if id(target) in done:
                continue
            path.add(id(target))
            found = follow(target, resolved.resolver)
            path.discard(id(target))
            if found is not None:
                return found
            done.add(id(target))
        return None

    for node in _subschemas(schema):
        if id(node) not in done:
            path.add(id(node))
            found = follow(node, resolver)
            path.discard(id(node))
            if found is not None:
                return found
            done.add(id(node))
    return None


def schema_problem(value: Any, schema: Mapping[str, Any], at: str = "arguments") -> str | None:
    """Why ``value`` does not match ``schema`` (``schema_error`` checked it when it was bound), in
    words the aggregator is told on a retry, or None."""
    kind = _without_regex(validator_for(schema, default=Draft202012Validator))
    validator = kind(schema, registry=NO_RETRIEVAL)
    try:
        error = best_match(validator.iter_errors(value))
    except Unresolvable:  # a reference schema_error does not follow ($dynamicRef...): unchecked
        return None
    except RecursionError:  # a value as deep as a recursive schema lets it be
        return f"{at} is nested too deeply"
    if error is None:
        return None
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"{at}{path}: {error.message}"


@functools.cache
def _without_regex(base: type[Validator]) -> type[Validator]:
    """``base`` checking no regular expression: a client's pattern run on what the model writes
    at the client's request could take exponential time (ReDoS) in the server's event loop.
    ``pattern`` and ``patternProperties`` go unchecked, and so do the keywords that read them
    (``additionalProperties`` beside ``patternProperties``, ``unevaluatedProperties``)."""
    additional = base.VALIDATORS["additionalProperties"]

    def unchecked(*_: Any) -> None:
        return None

    def additional_properties(
        validator: Validator, value: Any, instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[ValidationError]:
        if "patternProperties" not in schema:
            yield from additional(validator, value, instance, schema) or ()

    skipped = ("pattern", "patternProperties", "unevaluatedProperties")
    changed = {k: unchecked for k in skipped if k in base.VALIDATORS}
    kind: type[Validator] = extend(  # type: ignore[no-untyped-call]  # jsonschema's stubs
        base, {**changed, "additionalProperties": additional_properties}
    )
    return kind
