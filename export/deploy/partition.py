"""Cut an exported torchvision R-CNN graph into parts that run in order on two engines.

DeepSparse 1.8 crashes compiling the whole detector (an `If` output used as Gather indices in
torchvision's batched NMS; the mask head's `mask_prob[arange(N), labels]` Gather) but compiles its
static, heavy pieces. The cut is found by node scope, not tensor numbering: nodes whose name starts
with one of a heavy group's scopes (`/backbone/` + `/rpn/head/`, `/roi_heads/box_head/` +
`/roi_heads/box_predictor/`, the mask or keypoint head + predictor) form that group's part; every
other node goes to the light part after the last part it reads from. Light parts run on ONNX
Runtime (transform, anchors, decoding, NMS, RoIAlign, postprocess, mask pasting); heavy parts on
DeepSparse, or on ONNX Runtime as the reference. The RoI pools whose level merge was rewritten
(`compress.export.deploy.roi_merge`: RoiAligns + a Concat and a Gather under `<scope>lth_merge/`) form
parts of their own that run in torch (`compress.evaluate.runtimes.roi_align`), on both engines.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import helper

HEAVY_GROUPS: dict[str, tuple[str, ...]] = {
    "backbone": ("/backbone/", "/rpn/head/"),
    "box_head": ("/roi_heads/box_head/", "/roi_heads/box_predictor/"),
    "mask_head": ("/roi_heads/mask_head/", "/roi_heads/mask_predictor/"),
    "keypoint_head": ("/roi_heads/keypoint_head/", "/roi_heads/keypoint_predictor/"),
}


POOL_GROUPS: dict[str, str] = {
    "box_roi_pool": "/roi_heads/box_roi_pool/",
    "mask_roi_pool": "/roi_heads/mask_roi_pool/",
    "keypoint_roi_pool": "/roi_heads/keypoint_roi_pool/",
}
MERGE = "lth_merge/"


class PartitionError(RuntimeError):
    """The graph cannot be cut into ordered parts (a heavy part reads a later part's output)."""


@dataclass
class Part:
    """One contiguous piece of the graph: its nodes and the tensors crossing its border."""

    name: str
    heavy: bool
    runtime: str = "onnxruntime"
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def _group_of(node: onnx.NodeProto, pools: frozenset[str]) -> str | None:
    for group, scopes in HEAVY_GROUPS.items():
        if node.name.startswith(scopes):
            return group
    for group in pools:
        scope = POOL_GROUPS[group]
        if node.name.startswith(scope) and (node.op_type == "RoiAlign"
                                            or node.name.startswith(scope + MERGE)):
            return group
    return None


def _runtime(group: str) -> str:
    return "torch" if group in POOL_GROUPS else "deepsparse"


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Tensors a node reads, its subgraphs' outer-scope reads (If / Loop bodies) included."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for graph in graphs:
            local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
            for inner in graph.node:
                local.update(inner.output)
            for inner in graph.node:
                names += [name for name in node_inputs(inner) if name not in local]
    return list(dict.fromkeys(names))


def _segments(graph: onnx.GraphProto,
              pools: frozenset[str]) -> tuple[list[int], list[str | None]]:
    """Segment index of every node: heavy groups odd (in order of appearance), light parts even."""
    groups = [_group_of(node, pools) for node in graph.node]
    order = list(dict.fromkeys(g for g in groups if g))
    initializers = {init.name for init in graph.initializer}
    producer: dict[str, int] = {}
    segment = []
    for node, group in zip(graph.node, groups):
        before = [producer[name] for name in node_inputs(node) if name in producer]
        if node.op_type in ("Constant", "Identity") and set(node.input) <= initializers:
            seg = -1  # a constant (or a copy of a weight): copied into each part that reads it
        elif group:
            seg = 2 * order.index(group) + 1
            if before and max(before) > seg:
                raise PartitionError(f"heavy node {node.name} reads a later part's output")
        else:
            last = max(before, default=0)
            seg = last + 1 if last % 2 else max(last, 0)
        segment.append(seg)
        if seg >= 0:
            producer.update({name: seg for name in node.output})
    return segment, [None] + [g for g in order for _ in (0, 1)]


def rewritten_pools(model: onnx.ModelProto) -> frozenset[str]:
    """The RoI pools of `model` whose level merge `compress.export.deploy.roi_merge` rewrote."""
    return frozenset(group for group, scope in POOL_GROUPS.items()
                     if any(n.name.startswith(scope + MERGE) for n in model.graph.node))


def partition(model: onnx.ModelProto) -> list[Part]:
    """The ordered parts of `model` (light, heavy, light, ...), each with its border tensors."""
    graph = model.graph
    segment, names = _segments(graph, rewritten_pools(model))
    count = max(segment) + 1
    heavy_names = names[1:]
    parts = [Part(name=heavy_names[i - 1], heavy=True, runtime=_runtime(heavy_names[i - 1]))
             if i % 2 else Part(name=f"glue_{i // 2}", heavy=False) for i in range(count)]
    constants = {out: node for node, seg in zip(graph.node, segment) if seg < 0 for out in node.output}
    initializers = {init.name for init in graph.initializer}
    produced_in = {out: seg for node, seg in zip(graph.node, segment) if seg >= 0 for out in node.output}
    readers: dict[str, set[int]] = {}
    for node, seg in zip(graph.node, segment):
        if seg < 0:
            continue
        parts[seg].nodes.append(node)
        for name in node_inputs(node):
            readers.setdefault(name, set()).add(seg)
    graph_outputs = {o.name for o in graph.output}
    for index, part in enumerate(parts):
        needed = [n for node in part.nodes for n in node_inputs(node)]
        part_constants = [constants[n] for n in dict.fromkeys(needed) if n in constants]
        part.nodes = part_constants + part.nodes
        own = {out for node in part.nodes for out in node.output}
        part.inputs = [n for n in dict.fromkeys(needed)
                       if n not in own and n not in initializers]
        part.outputs = [n for n, seg in produced_in.items() if seg == index
                        and (n in graph_outputs or readers.get(n, set()) - {index})]
    return [part for part in parts if part.nodes]


def part_model(model: onnx.ModelProto, part: Part,
               types: dict[str, onnx.ValueInfoProto]) -> onnx.ModelProto:
    """A standalone ONNX model of `part` (its initializers, typed border tensors)."""
    used = {n for node in part.nodes for n in node_inputs(node)}
    initializers = [init for init in model.graph.initializer if init.name in used]
    missing = [n for n in part.inputs + part.outputs if n not in types]
    if missing:
        raise PartitionError(f"part {part.name}: no type known for tensor {missing[0]}")
    graph = helper.make_graph(list(part.nodes), part.name, [types[n] for n in part.inputs],
                              [types[n] for n in part.outputs], initializer=initializers)
    out = helper.make_model(graph, opset_imports=model.opset_import, producer_name="lth-compress")
    out.ir_version = model.ir_version
    return out
