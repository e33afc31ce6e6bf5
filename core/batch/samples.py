"""``--samples K``: K answers per prompt, each a distinct seeded run, cached separately.

Sample ``k`` of an item is an item of its own, with id ``ID#sk`` (so the run file, resume and the
call cache, whose key holds the id, keep the samples apart) and ``sample = k``. Each model of
sample ``k`` is sent the seed ``seed * K + k``, ``seed`` being its own, else the run's, else its
place in its layer (the aggregator's: 0): no two samples share a seed, nor do two proposers of
one model in a layer (Self-MoA) unless the config seeds them alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

from langgraph_moa.core.batch.inputs import Dataset, InvalidItem, Item
from langgraph_moa.nodes.context import Context, ModelSpec


def sample_id(item_id: str, k: int) -> str:
    return f"{item_id}#s{k}"


def base_id(item: Item | InvalidItem) -> str:
    """The dataset item's own id, whatever the sample."""
    sample = getattr(item, "sample", None)
    if sample is None:
        return item.id
    return item.id.removesuffix(f"#s{sample}")


def expand(items: Iterable[Item | InvalidItem], samples: int) -> Iterator[Item | InvalidItem]:
    """Each item ``samples`` times, as its samples (the items themselves when 1)."""
    for item in items:
        if samples == 1 or isinstance(item, InvalidItem):
            yield item
            continue
        for k in range(samples):
            yield dataclasses.replace(item, id=sample_id(item.id, k), sample=k)


class Sampled:
    """The samples of a streamed dataset's items, made as they are read (``expand``): a run of K
    samples holds no more in memory than a run of one."""

    def __init__(self, dataset: Dataset, samples: int) -> None:
        self.dataset, self.samples = dataset, samples

    def __iter__(self) -> Iterator[Item | InvalidItem]:
        return expand(self.dataset, self.samples)

    def __len__(self) -> int:
        valid = len(self.dataset) - self.dataset.invalid  # an invalid item has no samples
        return valid * self.samples + self.dataset.invalid

    def _sample(self, item_id: str) -> tuple[str, int] | None:
        """(the item's id, k) of the id of its sample k of this run; None for any other id."""
        base, mark, k = item_id.rpartition("#s")
        if mark and k.isdigit() and int(k) < self.samples and str(int(k)) == k:
            return base, int(k)
        return None

    def position(self, item_id: str) -> int | None:
        if (sample := self._sample(item_id)) is not None:
            found = self.dataset.position(sample[0])
            if found is not None:
                return found * self.samples + sample[1]
        found = self.dataset.position(item_id)  # an invalid item: one record, no samples
        if found is None or not self.dataset.invalid_at(found):
            return None
        return found * self.samples

    def digests(self, item_ids: Sequence[str]) -> dict[str, str]:
        # Every sample asks what its item asks.
        bases = {i: sample[0] for i in item_ids if (sample := self._sample(i)) is not None}
        found = self.dataset.digests(list(dict.fromkeys(bases.values())))
        return {i: found[base] for i, base in bases.items() if base in found}

    def close(self) -> None:
        self.dataset.close()


def sample_context(ctx: Context, k: int, samples: int) -> Context:
    """``ctx`` with every model seeded for sample ``k`` of ``samples``."""

    def seeded(spec: ModelSpec, place: int = 0) -> ModelSpec:
        seed = spec.seed if spec.seed is not None else ctx.seed if ctx.seed is not None else place
        return spec.model_copy(update={"seed": seed * samples + k})

    def layer(specs: list[ModelSpec]) -> list[ModelSpec]:
        return [seeded(s, n) for n, s in enumerate(specs)]

    update: dict[str, object] = {
        "proposers": layer(ctx.proposers),
        "aggregator": seeded(ctx.aggregator),
    }
    if ctx.layer_proposers is not None:
        update["layer_proposers"] = [layer(specs) for specs in ctx.layer_proposers]
    if ctx.fallback_aggregator is not None:
        update["fallback_aggregator"] = seeded(ctx.fallback_aggregator)
    return ctx.model_copy(update=update)
