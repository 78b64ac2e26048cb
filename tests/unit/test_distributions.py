"""The distribution registry: what each distribution needs and takes, read by the schema and used by
`Method.prune`."""
from __future__ import annotations

import typing

import pytest

from compress.lottery import sparseml_adapter
from compress.lottery.distributions import DISTRIBUTION_NAMES, DISTRIBUTIONS, for_recipe
from compress.lottery.masks import MASK_TYPES, Ranking
from compress.lottery.methods import METHODS
from compress.recipe.schema import LotteryCfg


def test_schema_takes_names_and_mask_types_from_the_registries():
    fields = LotteryCfg.model_fields
    assert typing.get_args(fields["distribution"].annotation) == DISTRIBUTION_NAMES
    assert typing.get_args(fields["mask_type"].annotation) == MASK_TYPES
    assert DISTRIBUTION_NAMES == ("global", "layerwise", "runtime")


def test_runtime_needs_a_profile_and_a_magnitude_method():
    runtime = DISTRIBUTIONS["runtime"]
    assert runtime.needs_profile and runtime.methods == ("imp", "oneshot")
    assert runtime.mask_types == ("unstructured",)
    assert for_recipe("runtime").ranking == Ranking("global", "unstructured")
    assert not any(DISTRIBUTIONS[n].needs_profile for n in ("global", "layerwise"))
    with pytest.raises(ValueError, match="needs an allocator"):
        METHODS["imp"].prune(None, {}, 0.2, "runtime", None)


def test_for_recipe_carries_the_mask_type():
    dist = for_recipe("layerwise", "block4")
    assert dist.ranking == Ranking("layerwise", "block4") and for_recipe(dist) is dist
    with pytest.raises(ValueError, match="cannot prune mask_type 'block4'"):
        for_recipe("runtime", "block4")
    with pytest.raises(ValueError, match="not in"):
        for_recipe("random")


def test_method_prune_goes_through_the_distribution(monkeypatch):
    seen = []
    monkeypatch.setattr(sparseml_adapter, "sparseml_prune",
                        lambda model, mask, fraction, ranking, log_dir: seen.append(ranking) or mask)
    monkeypatch.setattr(sparseml_adapter, "sparseml_prune_layers",
                        lambda model, mask, zeros, log_dir: seen.append(zeros) or mask)
    METHODS["imp"].prune(None, {}, 0.2, "global", None)
    METHODS["imp"].prune(None, {}, 0.2, for_recipe("layerwise", "block4"), None)
    METHODS["imp"].prune(None, {}, 0.2, "runtime", None, allocate=lambda m, k, f: {"w": 3})
    assert seen == [Ranking("global"), Ranking("layerwise", "block4"), {"w": 3}]


def test_schema_messages_name_the_registry():
    with pytest.raises(ValueError, match="distribution 'runtime' works with methods imp, oneshot, "
                                         "not 'dense'"):
        LotteryCfg(method="dense", distribution="runtime")
    with pytest.raises(ValueError, match="mask_type 'block4' works with distributions global, "
                                         "layerwise, not 'runtime'"):
        LotteryCfg(mask_type="block4", distribution="runtime")
    assert LotteryCfg(mask_type="block4").mask_type == "block4"
