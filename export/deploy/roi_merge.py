"""Rewrite how torchvision's ONNX export merges the FPN levels of `MultiScaleRoIAlign`.

torchvision exports the merge (`_onnx_merge_levels`) as a chain of ScatterElements, one per
level, each scattering that level's pooled RoIs (K x C x h x w, expanded indices of the same
size) into a zero tensor of all RoIs: ONNX Runtime scatters element by element, and at 1000 RoIs
x 256 x 7 x 7 the four scatters took more of the glue's time than the RoiAligns themselves. The
rewrite computes the same tensor with a Concat of the levels' results and one Gather of whole
rows: `order` = the inverse of the concatenated level indices (a 1-D scatter of N integers), then
`merged = Gather(Concat(pooled_0..L), order)`. Every RoI belongs to exactly one level (the level
map is clamped), so the level indices are a permutation and the two graphs are equal value for
value. The Cast after each RoiAlign (float to float) is dropped; nodes left without readers
(the zero tensor, the index Expands) are removed.

New nodes are named under `<scope>lth_merge/` (the Concat and Gather of pooled rows: with the
RoiAligns they form the deployment's torch RoI-pooling part) and `<scope>lth_order/` (the
inverse permutation: light glue).
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from compress.export.deploy.partition import MERGE, POOL_GROUPS, node_inputs

ORDER = "lth_order/"
ZEROS = ("ConstantOfShape", "Expand")  # the all-RoIs zero tensor the first scatter writes into


@dataclass
class MergeChain:
    """One pool's scatter chain: per level the RoI indices, the pooled result, the RoiAlign."""

    scope: str
    indices: list[str]
    pooled: list[str]
    scatters: list[onnx.NodeProto]
    output: str


def _producer(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _source_of_updates(name: str, producer: dict[str, onnx.NodeProto]) -> str:
    """The RoiAlign output behind a scatter's updates (through a float-to-float Cast)."""
    node = producer.get(name)
    if node is not None and node.op_type == "Cast":
        inner = producer.get(node.input[0])
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if inner is not None and inner.op_type == "RoiAlign" and to == TensorProto.FLOAT:
            return inner.output[0]
    return name


def _index_of(name: str, producer: dict[str, onnx.NodeProto]) -> str | None:
    """The 1-D RoI index tensor behind Expand(Reshape(index, [-1, 1, 1, 1]), shape)."""
    expand = producer.get(name)
    if expand is None or expand.op_type != "Expand":
        return None
    reshape = producer.get(expand.input[0])
    if reshape is None or reshape.op_type != "Reshape":
        return None
    return reshape.input[0]


def find_chains(graph: onnx.GraphProto) -> list[MergeChain]:
    """The level-merging scatter chains of the RoI pools in `graph` (none if the pattern differs)."""
    producer = _producer(graph)
    chains = []
    for scope in POOL_GROUPS.values():
        scatters = [n for n in graph.node if n.op_type == "ScatterElements"
                    and n.name.startswith(scope)]
        if not scatters:
            continue
        indices = [_index_of(n.input[1], producer) for n in scatters]
        linked = all(b.input[0] == a.output[0] for a, b in zip(scatters, scatters[1:]))
        axis0 = all(next((a.i for a in n.attribute if a.name == "axis"), 0) == 0 for n in scatters)
        if None in indices or not linked or not axis0:
            continue
        pooled = [_source_of_updates(n.input[2], producer) for n in scatters]
        aligned = all(name in producer and producer[name].op_type == "RoiAlign" for name in pooled)
        rois = sum(1 for n in graph.node if n.op_type == "RoiAlign" and n.name.startswith(scope))
        start = producer.get(scatters[0].input[0])
        if not aligned or rois != len(scatters) or start is None or start.op_type not in ZEROS:
            continue  # not torchvision's merge as this rewrite knows it: left as it is
        chains.append(MergeChain(scope, indices, pooled, scatters, scatters[-1].output[0]))
    return chains


def _merge_nodes(chain: MergeChain) -> list[onnx.NodeProto]:
    s, o, m = chain.scope, chain.scope + ORDER, chain.scope + MERGE
    t = lambda name: f"{s}lth_{name}"  # noqa: E731 (tensor names of the new nodes)
    const = lambda name, value: helper.make_node(  # noqa: E731
        "Constant", [], [t(name)], name=f"{o}{name}",
        value=helper.make_tensor(t(name), TensorProto.INT64, [], [value]))
    return [
        helper.make_node("Concat", chain.indices, [t("indices")], name=f"{o}Concat", axis=0),
        helper.make_node("Shape", [t("indices")], [t("count_1d")], name=f"{o}Shape"),
        helper.make_node("ConstantOfShape", [t("count_1d")], [t("zeros")], name=f"{o}Zeros",
                         value=helper.make_tensor("z", TensorProto.INT64, [1], [0])),
        const("zero", 0), const("one", 1),
        helper.make_node("Gather", [t("count_1d"), t("zero")], [t("count")], name=f"{o}Count",
                         axis=0),
        helper.make_node("Range", [t("zero"), t("count"), t("one")], [t("rows")], name=f"{o}Range"),
        helper.make_node("ScatterElements", [t("zeros"), t("indices"), t("rows")], [t("order")],
                         name=f"{o}Inverse", axis=0),
        helper.make_node("Concat", chain.pooled, [t("pooled")], name=f"{m}Concat", axis=0),
        helper.make_node("Gather", [t("pooled"), t("order")], [chain.output], name=f"{m}Gather",
                         axis=0),
    ]


def prune_dead(graph: onnx.GraphProto) -> int:
    """Remove nodes none of whose outputs is read (by a node or as a graph output); the count."""
    removed = 0
    while True:
        read = {o.name for o in graph.output}
        for node in graph.node:
            read.update(node_inputs(node))
        dead = [n for n in graph.node if not any(out in read for out in n.output)]
        if not dead:
            return removed
        for node in dead:
            graph.node.remove(node)
        removed += len(dead)


def rewrite_roi_merges(model: onnx.ModelProto) -> list[str]:
    """Replace every RoI pool's scatter merge in `model` (in place); the scopes rewritten."""
    graph = model.graph
    chains = find_chains(graph)
    for chain in chains:
        position = list(graph.node).index(chain.scatters[-1])
        for node in chain.scatters:
            graph.node.remove(node)
            position -= 1
        for offset, node in enumerate(_merge_nodes(chain)):
            graph.node.insert(position + 1 + offset, node)
    if chains:
        prune_dead(graph)
    return [chain.scope for chain in chains]
