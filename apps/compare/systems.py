"""The systems a comparison runs: ``--system NAME=SPEC``, or a preset and its own models.

A SPEC is a preset name, a TOML config file, or one ``provider:model``; a preset or config file
followed by ``+staircase`` is that mixture with staircase streaming on, so
``--system staircase=moa+staircase --system standard=moa`` judges what staircase streaming does
to the answers of one mixture (docs/performance.md). A single model runs
through the same MoA graph with ``layers=1`` (the aggregator alone), so every system's answers
take the same code path, retries, limits and cache. The first system is the *candidate* (the
mixture under test); each other system is a *baseline* it is judged against.

Without ``--system``: the chosen mixture (preset, config or flags) against its aggregator alone
and against each of its proposer models alone. A model is a baseline once: a proposer that is the
aggregator's model, or a model sampled several times (Self-MoA), is not run again under its other
settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from langgraph_moa.nodes.context import MODEL_NAME, Context, ModelSpec, build_context
from langgraph_moa.nodes.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")

# Settings of a mixture that make no sense for one model alone.
_MIXTURE_FIELDS = {
    "proposers",
    "layer_proposers",
    "aggregator",
    "fallback_aggregator",
    "layers",
    "quorum",
    "quorum_grace",
    "min_proposals",
}


@dataclass(frozen=True)
class System:
    """One system of a comparison: a name, what it was made from, and its settings."""

    name: str
    spec: str  # as given (preset, config file, provider:model), or how it was derived
    ctx: Context

    @property
    def single(self) -> bool:
        """One model alone (no proposers)."""
        return self.ctx.layers == 1

    @property
    def models(self) -> str:
        """What it runs, in one line: ``3 x smollm2 -> smollm2`` or ``smollm2``."""
        agg = _short(self.ctx.aggregator.model)
        if self.single:
            return self.ctx.aggregator.model
        layers = []
        for n in range(1, self.ctx.layers):
            names = [_short(s.model) for s in self.ctx.proposers_of(n)]
            counted = {m: names.count(m) for m in names}
            layers.append(", ".join(f"{k} x {m}" if k > 1 else m for m, k in counted.items()))
        return " -> ".join([*(f"[{layer}]" for layer in layers), agg])


def _short(model: str) -> str:
    return model.split(":", 1)[1].rsplit("/", 1)[-1]


def single_model(spec: ModelSpec, base: Context) -> Context:
    """``spec`` alone: the MoA graph with ``layers=1``, the run-wide settings of ``base``."""
    data = base.model_dump(exclude=_MIXTURE_FIELDS)
    data.update(layers=1, proposers=[], aggregator=spec.model_dump(exclude_none=True))
    return build_context(data, spec.model)


def parse_system(text: str) -> tuple[str, str]:
    """``NAME=SPEC`` -> (name, spec)."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise ConfigError(
            f"--system {text!r}: write NAME=SPEC, e.g. --system moa=moa-lite or "
            "--system qwen=together:Qwen/Qwen2.5-72B-Instruct-Turbo"
        )
    if not NAME.match(name):
        raise ConfigError(
            f"--system {text!r}: the name {name!r} may hold only letters, digits, '.', '_' and "
            "'-' (it names the system's answer file)"
        )
    return name, spec


def is_model_name(spec: str) -> bool:
    """A ``provider:model`` (and not a file that happens to hold a colon)."""
    return bool(MODEL_NAME.match(spec)) and not Path(spec).exists()


def from_spec(name: str, spec: str, mixture: Context, base: Context) -> System:
    """The system ``NAME=SPEC``; ``mixture`` is SPEC read as a preset or config (see run.py),
    with its ``+staircase`` suffix applied."""
    if is_model_name(spec):
        try:
            model = ModelSpec(model=spec)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ConfigError(f"--system {name}={spec}: {exc}") from None
        return System(name, spec, single_model(model, base))
    return System(name, spec, mixture)


def default_systems(ctx: Context, name: str) -> list[System]:
    """The mixture ``ctx`` (named ``name``), its aggregator alone, each proposer model alone."""
    if ctx.layers == 1:
        raise ConfigError(
            "the chosen settings run one model alone (layers=1): there is no mixture to compare; "
            "pick a preset with proposers, or give the systems with --system NAME=SPEC"
        )
    specs: dict[str, tuple[ModelSpec, str]] = {ctx.aggregator.model: (ctx.aggregator, "aggregator")}
    for n in range(1, ctx.layers):
        for s in ctx.proposers_of(n):
            specs.setdefault(s.model, (s, "proposer"))
    shorts = [_short(model) for model in specs]
    # Named after its preset or config file, whose name may hold anything: the name names an
    # answer file and labels the plot, where '$...$' is matplotlib's math.
    name = safe_name(name)
    systems = [System(name, name, ctx)]
    for (model, (spec, role)), short in zip(specs.items(), shorts, strict=True):
        # Two models with one short name (two providers), or the mixture's name: the full name.
        label = short if shorts.count(short) == 1 and short != name else model
        systems.append(System(safe_name(label), f"{model} alone ({role})", single_model(spec, ctx)))
    return systems


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._\-]+", "_", label).strip("_") or "model"


def check_names(systems: list[System]) -> None:
    if len(systems) < 2:
        raise ConfigError(
            "a comparison needs at least two systems: the candidate (the first --system) and a "
            "baseline to judge it against"
        )
    seen: set[str] = set()
    for s in systems:
        if s.name.lower() in seen:
            raise ConfigError(f"two systems are named {s.name!r}: give each its own name")
        seen.add(s.name.lower())
