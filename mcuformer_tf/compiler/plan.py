"""The offline memory plan: an arena offset for every activation, as TFLM's OfflineMemoryAllocation.

The buffers are the ones TFLM's planner receives (`arena_plan.planned_buffers`:
each activation's size rounded up to 16 bytes and its lifetime in TFLM's
scopes, plus the scratch every kernel requests in Prepare). An operator's
`in_place` outputs share their input's memory (the fused kernels overwrite
the tokens or pixels they consume), at the input's offset plus the
operator's `in_place_offset` for that output (0: the same offset), which is
sound only where the input is read by nothing after that operator; `plan`
refuses any other pair. Buffers are then placed as TFLM's
GreedyMemoryPlanner places them (largest first, each at the lowest offset
free throughout its lifetime: `arena_plan.greedy_plan`), tensors linked
in place as one rigid piece in which each takes room only while it is
alive, so every offset is a multiple of 16.

TFLM keeps the offline offsets and plans the scratch buffers online around
them, so the arena the plan costs is what `memory_report` computes for the
planned model, which is TFLM's reported head (checked in the wheel by the
tests). The metadata is what TFLM's AllocationInfoBuilder reads
(micro_allocation_info.cc, docs/memory_management.md): little-endian int32
words [1 (format version), 0 (subgraph), n (the subgraph's tensors),
offset of tensor 0, …, offset of tensor n-1], -1 for a tensor TFLM places
itself (the constants, which live in the flatbuffer).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mcuformer_tf.compiler import ir
from mcuformer_tf.compiler.unfuse import MCUF_SCRATCH
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm import arena_plan
from mcuformer_tf.tflm.arena_plan import OFFLINE_PLAN
from mcuformer_tf.tflm.tflite_graph import read_model

FORMAT_VERSION = 1
ONLINE = -1  # a tensor TFLM plans itself


@dataclass
class Plan:
    offsets: list  # per tensor (in the written model's order): arena offset, or ONLINE
    size: int  # the non-persistent arena (TFLM's head), scratch placed by TFLM included
    buffers: list  # the PlannedBuffers as TFLM will place them (offsets set)


def _groups(buffers, in_place) -> list:
    """Buffers joined by in-place links (input tensor, output tensor[, output offset minus the
    input's]): lists of (buffer, its offset from the group's start), each group one buffer."""
    by_tensor = {b.tensor: b for b in buffers if b.tensor is not None}
    links = {}
    for source, target, *shift in in_place:
        delta = shift[0] if shift else 0
        links.setdefault(id(by_tensor[source]), []).append((by_tensor[target], delta))
        links.setdefault(id(by_tensor[target]), []).append((by_tensor[source], -delta))
    grouped, groups = set(), []
    for b in buffers:
        if id(b) in grouped:
            continue
        relative, stack = {id(b): (b, 0)}, [b]
        while stack:
            current = stack.pop()
            for other, delta in links.get(id(current), []):
                if id(other) not in relative:
                    relative[id(other)] = (other, relative[id(current)][1] + delta)
                    stack.append(other)
        low = min(offset for _, offset in relative.values())
        groups.append([(member, offset - low) for member, offset in relative.values()])
        grouped.update(relative)
    return groups


def _collides(buffer, offset: int, other) -> bool:
    """Whether `buffer` at `offset` shares a byte with `other` while both are alive."""
    return (other.first <= buffer.last and buffer.first <= other.last
            and other.offset < offset + buffer.size and offset < other.offset + other.size)


def pack(buffers, in_place=()) -> int:
    """Set every buffer's offset, in-place links of tensor indices (input, output[, output offset
    minus the input's]) sharing memory; the plan's size.

    As TFLM's GreedyMemoryPlanner: largest first (ties in reverse order), each at the lowest
    offset where it overlaps nothing alive at the same time; a group of linked buffers is one
    rigid piece, each member taking room only while it is alive.
    """
    groups = _groups(buffers, in_place)
    spans = [max(offset + b.size for b, offset in group) for group in groups]
    placed = []
    for k in sorted(reversed(range(len(groups))), key=lambda k: -spans[k]):
        group = groups[k]
        near = [other for other in placed if any(
            other.first <= b.last and b.first <= other.last for b, _ in group)]
        candidates = sorted({0} | {other.offset + other.size - offset for other in near
                                   for _, offset in group})
        base = next(c for c in candidates if c >= 0 and not any(
            _collides(b, c + offset, other) for b, offset in group for other in near))
        for b, offset in group:
            b.offset = base + offset
            placed.append(b)
    return max((b.offset + b.size for b in buffers), default=0)


def _in_place_links(model, graph, buffers) -> list:
    """(input, output, output offset minus the input's) tensor indices of every in-place operator
    output, checked to be sound."""
    index = {t: i for i, t in enumerate(model.tensors)}
    by_tensor = {b.tensor: b for b in buffers if b.tensor is not None}
    links = []
    for position, op in enumerate(model.operators):
        for out, inp in op.in_place.items():
            source, target = index[op.inputs[inp]], index[op.outputs[out]]
            if source not in by_tensor or target not in by_tensor:
                raise McuformerError(f"operator {position} ({op.opcode}) is in place on a "
                                     "constant or empty tensor")
            if by_tensor[source].last != position + 1 or source in graph.outputs:
                raise McuformerError(f"operator {position} ({op.opcode}) overwrites "
                                     f"'{op.inputs[inp].name}', which is read after it")
            shift = op.in_place_offset.get(out, 0)
            if shift % arena_plan.ALIGNMENT:
                raise McuformerError(f"operator {position} ({op.opcode}): in-place offset {shift} "
                                     f"is not a multiple of {arena_plan.ALIGNMENT}")
            links.append((source, target, shift))
    return links


def _check_scratch_modelled(graph) -> None:
    for op in graph.operators:
        if op.opcode in arena_plan.UNMODELLED_SCRATCH or (op.is_custom and op.opcode not in MCUF_SCRATCH):
            raise McuformerError(f"operator {op.index} ({op.opcode}): its scratch is not modelled "
                                 "(arena_plan.SCRATCH, unfuse.MCUF_SCRATCH), so no plan can predict "
                                 "TFLM's arena")


def offline_plan_metadata(offsets) -> bytes:
    """TFLM's OfflineMemoryAllocation words for one subgraph's tensor offsets."""
    return np.asarray([FORMAT_VERSION, 0, len(offsets), *offsets], "<i4").tobytes()


def _as_tflm_places(buffers, offsets) -> Plan:
    """The plan TFLM makes of tensor `offsets`: it keeps them and places the scratch online."""
    placed = [replace(b, offline_offset=offsets[b.tensor] if b.tensor is not None else None,
                      offset=-1) for b in buffers]
    return Plan(offsets, arena_plan.greedy_plan(placed), placed)


def plan(model: ir.Model) -> Plan:
    """Plan the model's activations offline and write the plan into its metadata.

    Prunes the model first, so the offsets follow the tensor order `ir.write` writes. The
    tensors are packed twice, among the scratch buffers (as TFLM's planner would) and alone
    (the scratch left to TFLM); the smaller arena wins.
    """
    model.prune()
    model.metadata.pop(OFFLINE_PLAN, None)
    graph = read_model(ir.write(model))
    _check_scratch_modelled(graph)
    buffers = arena_plan.planned_buffers(graph, MCUF_SCRATCH)
    links = _in_place_links(model, graph, buffers)
    best = None
    for with_scratch in (True, False):
        trial = [replace(b) for b in buffers if with_scratch or b.tensor is not None]
        pack(trial, links)
        offsets = [ONLINE] * len(graph.tensors)
        for b in trial:
            if b.tensor is not None:
                offsets[b.tensor] = b.offset
        candidate = _as_tflm_places(buffers, offsets)
        if best is None or candidate.size < best.size:
            best = candidate
    model.metadata[OFFLINE_PLAN] = offline_plan_metadata(best.offsets)
    return best
