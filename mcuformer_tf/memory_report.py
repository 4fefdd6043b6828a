"""Where a model's bytes go in stock TFLM: the non-persistent arena per operator, and flash.

The arena plan repeats what TFLM does in `MicroAllocator::CommitStaticMemoryPlan`:
lifetimes as `AllocationInfoBuilder` marks them (graph inputs from scope 0,
operator i at scope i + 1, graph outputs to the end), each buffer rounded up
to 16 bytes, the scratch each reference kernel requests in Prepare
(`RequestScratchBufferInArena`, read from tensorflow/lite/micro/kernels), and
offsets placed exactly as `GreedyMemoryPlanner` places them (offline-planned
buffers first, then the rest by size, largest first, first fit among buffers
alive at the same time). Its peak is the "head" TFLM reports. The persistent
tail (kernel data, BATCH_MATMUL's transposed operands, tensor structs) is not
modelled here: `arena_search` measures it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mcuformer_tf.tflite_graph import read_model

ALIGNMENT = 16
OFFLINE_PLAN = "OfflineMemoryAllocation"
HOST_POINTER = 8  # bytes; ADD_N's scratch holds one pointer per input (the wheel is 64-bit)
# Which input of an operator is its weights and which its bias.
WEIGHT_BIAS_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
                      "TRANSPOSE_CONV": (1, 3)}
# Builtins whose reference kernels request scratch not modelled here; other builtins request none.
UNMODELLED_SCRATCH = {"SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM"}


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _elements(tensor) -> int:
    return int(np.prod(tensor.shape, dtype=np.int64))


def _mean_or_sum(graph, op):
    x, axis = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    out = graph.tensors[op.outputs[0]]
    accumulator = [4 * _elements(out)] if x.dtype.name in ("int8", "int16") else []
    return accumulator + [4 * len(x.shape), 4 * _elements(axis)]


def _min_max_all(graph, op):
    x, axis = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    return [4 * len(x.shape), 4 * _elements(axis)]


def _transpose_conv(graph, op):
    x, out = graph.tensors[op.inputs[2]], graph.tensors[op.outputs[0]]
    if x.dtype.name == "int8":
        return [4 * _elements(out)]
    if x.dtype.name == "int16":
        bias = graph.tensors[op.inputs[3]] if len(op.inputs) > 3 and op.inputs[3] >= 0 else None
        converted = [8 * _elements(bias)] if bias is not None and bias.dtype.name == "int16" else []
        return converted + [8 * _elements(out)]
    return []


def _add_n(graph, op):
    return [HOST_POINTER * len(op.inputs)] if graph.tensors[op.outputs[0]].dtype.name in (
        "float32", "int8") else []


def _mirror_pad(graph, op):
    return [4 * len(graph.tensors[op.inputs[0]].shape)] * 2


def _mcuf(graph, op):
    """One buffer: the kernel's *_get_buffer_size for the subgraph the operator stands for."""
    from mcuformer_tf.compiler.unfuse import kernel

    return [kernel(graph, op).buffer_size()]


# Scratch requests in Prepare, in request order (tensorflow/lite/micro/kernels: reduce_common.cc,
# transpose_conv.cc, add_n.cc, mirror_pad.cc; our glue for the MCUF ops). The other requests are
# for int4 filters (which read_model does not accept) and UNMODELLED_SCRATCH.
SCRATCH = {"MEAN": _mean_or_sum, "SUM": _mean_or_sum, "REDUCE_MAX": _min_max_all,
           "REDUCE_MIN": _min_max_all, "REDUCE_ALL": _min_max_all,
           "TRANSPOSE_CONV": _transpose_conv, "ADD_N": _add_n, "MIRROR_PAD": _mirror_pad,
           "MCUF_PATCH_EMBED": _mcuf, "MCUF_ATTENTION": _mcuf, "MCUF_MLP": _mcuf}


@dataclass
class PlannedBuffer:
    """One buffer of the non-persistent plan: a tensor, or an operator's scratch."""

    size: int  # bytes, rounded up to 16 as TFLM plans it
    first: int  # allocation scope: 0 for graph inputs, i + 1 for operator i
    last: int
    tensor: int | None = None
    operator: int | None = None  # for scratch: the operator that requested it
    offline_offset: int | None = None
    offset: int = -1

    def alive_at(self, scope: int) -> bool:
        return self.first <= scope <= self.last


@dataclass
class OperatorMemory:
    index: int
    opcode: str
    live: list  # tensor indices alive while the operator runs
    live_bytes: int  # the arena bytes they cover (planned, aligned; shared bytes once)
    scratch: int  # the operator's own scratch, planned bytes
    top: int  # the highest arena byte in use while it runs


@dataclass
class Flash:
    weights: int  # constant operands of convolutions, fully-connected and matmul ops
    biases: int
    other_constants: int
    metadata: int
    structure: int  # the flatbuffer's own tables: tensors, operators, names, quantisation, padding
    quantization: int = 0  # part of structure: scales (4 B) and zero points (8 B) per channel
    names: int = 0  # part of structure: tensor names

    @property
    def total(self) -> int:
        return self.weights + self.biases + self.other_constants + self.metadata + self.structure


@dataclass
class MemoryReport:
    name: str
    graph: object
    buffers: list
    operators: list
    peak: int  # the non-persistent arena: TFLM's reported head
    peak_operator: int | None  # the operator with the most bytes alive (tensors and scratch)
    most_alive: int  # those bytes; the plan's gaps make up the rest of the peak
    flash: Flash
    unmodelled: list = field(default_factory=list)  # operators whose scratch is unknown here


def _offline_offsets(graph):
    raw = graph.metadata.get(OFFLINE_PLAN)
    if raw is None:
        return None
    words = np.frombuffer(raw, np.int32)
    return [None if int(v) == -1 else int(v) for v in words[3:3 + len(graph.tensors)]]


def planned_buffers(graph) -> list:
    """The buffers TFLM's planner receives, in its order: tensors, then scratch requests."""
    scopes = {}
    for i in graph.inputs:
        scopes[i] = [0, 0]
    for op in graph.operators:
        for i in op.outputs:
            scopes.setdefault(i, [op.index + 1, op.index + 1])
        for i in op.inputs:
            if i >= 0:
                scopes.setdefault(i, [-1, -1])[1] = op.index + 1
        for i in op.outputs:
            scopes[i][1] = op.index + 1
    end = len(graph.operators)
    for i in graph.outputs:
        scopes.setdefault(i, [end, end])[1] = end
    offline = _offline_offsets(graph)
    buffers = []
    for tensor in graph.tensors:
        offset = offline[tensor.index] if offline is not None else None
        if tensor.is_constant or tensor.nbytes == 0 or (tensor.is_variable and offset is None):
            continue
        first, last = scopes.get(tensor.index, (-1, -1))
        buffers.append(PlannedBuffer(_align(tensor.nbytes), first, last, tensor=tensor.index,
                                     offline_offset=offset))
    for op in graph.operators:
        for size in SCRATCH[op.opcode](graph, op) if op.opcode in SCRATCH else []:
            buffers.append(PlannedBuffer(_align(size), op.index + 1, op.index + 1,
                                         operator=op.index))
    return buffers


def greedy_plan(buffers) -> int:
    """Set every buffer's offset as TFLM's GreedyMemoryPlanner does; returns the plan's size."""
    if not buffers:
        return 0
    offline = [b for b in buffers if b.offline_offset is not None]
    # Online buffers enter the sort array from its tail (so in reverse), then a stable sort by size.
    online = sorted(reversed([b for b in buffers if b.offline_offset is None]),
                    key=lambda b: -b.size)
    placed = []  # sorted by offset; a new buffer goes after those at the same offset
    for buffer in offline + online:
        if buffer.offline_offset is not None:
            candidate = buffer.offline_offset
        else:
            candidate = 0
            for other in placed:
                if other.first > buffer.last or buffer.first > other.last:
                    continue
                if other.offset - candidate >= buffer.size:
                    break
                candidate = max(candidate, other.offset + other.size)
        buffer.offset = candidate
        position = next((k for k, other in enumerate(placed) if other.offset > candidate),
                        len(placed))
        placed.insert(position, buffer)
    return max(b.offset + b.size for b in buffers)


def _buffer_lengths(raw: bytes) -> tuple:
    """Bytes of each flatbuffer buffer, and the buffer each tensor of subgraph 0 refers to."""
    model = schema.Model.GetRootAs(raw, 0)
    lengths = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        lengths.append(buffer.Size() if buffer.Offset() > 1 else buffer.DataLength())
    subgraph = model.Subgraphs(0)
    tensor_buffers = [subgraph.Tensors(i).Buffer() for i in range(subgraph.TensorsLength())]
    metadata = [model.Metadata(i).Buffer() for i in range(model.MetadataLength())]
    return lengths, tensor_buffers, metadata


def flash_split(graph, raw: bytes) -> Flash:
    """The model's bytes by what they hold; a constant shared by several tensors counts once."""
    lengths, tensor_buffers, metadata_buffers = _buffer_lengths(raw)
    role = {}  # buffer index -> weights / biases / other_constants
    for op in graph.operators:
        weight_input, bias_input = WEIGHT_BIAS_INPUTS.get(op.opcode, (None, None))
        for position, index in enumerate(op.inputs):
            if index < 0 or not graph.tensors[index].is_constant:
                continue
            tensor = graph.tensors[index]
            if position == weight_input or (op.opcode == "BATCH_MATMUL" and position < 2) or (
                    op.is_custom and tensor.dtype.name == "int8"):
                kind = "weights"
            elif position == bias_input or (op.is_custom and tensor.dtype.name == "int32"):
                kind = "biases"
            else:
                kind = "other_constants"
            role.setdefault(tensor_buffers[index], kind)
    for tensor in graph.tensors:
        if tensor.is_constant:
            role.setdefault(tensor_buffers[tensor.index], "other_constants")
    totals = {"weights": 0, "biases": 0, "other_constants": 0}
    for buffer, kind in role.items():
        totals[kind] += lengths[buffer]
    metadata = sum(lengths[b] for b in set(metadata_buffers) if b not in role)
    quantization = sum(t.quantization.scale.size * 4 + t.quantization.zero_point.size * 8
                       for t in graph.tensors if t.quantization is not None)
    return Flash(metadata=metadata, structure=len(raw) - sum(totals.values()) - metadata,
                 quantization=quantization, names=sum(len(t.name.encode()) for t in graph.tensors),
                 **totals)


def _covered(buffers) -> int:
    """Arena bytes the buffers cover, a byte several share (in-place tensors) once."""
    total, end = 0, 0
    for b in sorted(buffers, key=lambda b: b.offset):
        total += max(0, b.offset + b.size - max(b.offset, end))
        end = max(end, b.offset + b.size)
    return total


def memory_report(source) -> MemoryReport:
    """The report for a .tflite (a path or its bytes)."""
    graph = read_model(source)
    raw = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    buffers = planned_buffers(graph)
    peak = greedy_plan(buffers)
    operators = []
    for op in graph.operators:
        scope = op.index + 1
        alive = [b for b in buffers if b.alive_at(scope)]
        tensors = [b for b in alive if b.tensor is not None]
        operators.append(OperatorMemory(
            op.index, op.opcode, [b.tensor for b in tensors], _covered(tensors),
            sum(b.size for b in alive if b.operator == op.index),
            max((b.offset + b.size for b in alive), default=0)))
    demand = [m.live_bytes + m.scratch for m in operators]
    peak_operator = int(np.argmax(demand)) if demand else None
    unmodelled = [op.index for op in graph.operators if op.opcode in UNMODELLED_SCRATCH
                  or (op.is_custom and op.opcode not in SCRATCH)]
    name = Path(source).name if isinstance(source, (str, Path)) else "model"
    return MemoryReport(name, graph, buffers, operators, peak, peak_operator,
                        max(demand, default=0), flash_split(graph, raw), unmodelled)


def _kib(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KiB)"


def format_report(report: MemoryReport) -> str:
    graph = report.graph
    lines = [f"{report.name}: {len(graph.operators)} operators, {len(graph.tensors)} tensors, "
             f"{len(report.buffers)} planned buffers",
             f"{'op':>4}  {'opcode':<22}{'live bytes':>11}{'scratch':>9}{'arena top':>11}"
             "  live tensors"]
    for m in report.operators:
        mark = "  <- most alive" if m.index == report.peak_operator else ""
        lines.append(f"{m.index:>4}  {m.opcode:<22}{m.live_bytes:>11,}{m.scratch:>9,}{m.top:>11,}"
                     f"  {','.join(map(str, m.live))}{mark}")
    lines.append(f"non-persistent arena (TFLM's head): {_kib(report.peak)}")
    if report.peak_operator is not None:
        op = report.operators[report.peak_operator]
        lines.append(f"  set by operator {op.index} ({op.opcode}) with {report.most_alive:,} B "
                     f"alive (the plan's gaps add {report.peak - report.most_alive:,} B); "
                     "alive there:")
        for b in sorted((b for b in report.buffers if b.alive_at(op.index + 1)),
                        key=lambda b: b.offset):
            what = (f"tensor {b.tensor} '{graph.tensors[b.tensor].name}' "
                    f"{list(graph.tensors[b.tensor].shape)}" if b.tensor is not None
                    else f"scratch of operator {b.operator}")
            lines.append(f"    [{b.offset:>8,} +{b.size:>8,}] {what}")
    if report.unmodelled:
        names = sorted({graph.operators[i].opcode for i in report.unmodelled})
        lines.append(f"  scratch not modelled for {len(report.unmodelled)} operators "
                     f"({', '.join(names)}): the head may exceed this plan")
    f = report.flash
    lines.append(f"flash (the .tflite): {_kib(f.total)} = weights {f.weights:,} + biases "
                 f"{f.biases:,} + other constants {f.other_constants:,} + metadata {f.metadata:,}"
                 f" + flatbuffer structure {f.structure:,} (of which quantisation parameters "
                 f"{f.quantization:,}, tensor names {f.names:,})")
    return "\n".join(lines)


def format_comparison(report: MemoryReport, other: MemoryReport) -> str:
    """Two models' plans side by side (a fused model and its unfused one), with their ratios."""
    rows = [("operators", len(report.graph.operators), len(other.graph.operators)),
            ("tensors", len(report.graph.tensors), len(other.graph.tensors)),
            ("non-persistent arena (B)", report.peak, other.peak),
            ("most bytes alive (B)", report.most_alive, other.most_alive),
            ("flash, the .tflite (B)", report.flash.total, other.flash.total)]
    width = max(len(report.name), len(other.name), 10) + 2
    lines = [f"{'':<26}{report.name:>{width}}{other.name:>{width}}{'ratio':>8}"]
    for label, first, second in rows:
        ratio = f"{first / second:>8.2f}" if second else ""
        lines.append(f"{label:<26}{first:>{width},}{second:>{width},}{ratio}")
    return "\n".join(lines)


def _draw_arena(ax, report: MemoryReport, top: float) -> None:
    from matplotlib.patches import Rectangle

    n = max(len(report.operators), 1)
    for b in report.buffers:
        start, stop = max(b.first, 0) - 1.5, max(b.last, 0) - 0.5
        colour = "tab:blue" if b.tensor is not None else "tab:orange"
        ax.add_patch(Rectangle((start, b.offset / 1024), stop - start, b.size / 1024,
                               facecolor=colour, edgecolor="white", linewidth=0.3, alpha=0.8))
    ax.step(range(n), [m.live_bytes / 1024 for m in report.operators], where="mid",
            color="black", linewidth=0.8, label="live tensor bytes")
    ax.axhline(report.peak / 1024, color="tab:red", linestyle="--", linewidth=1,
               label=f"peak {report.peak / 1024:.1f} KiB")
    if report.peak_operator is not None:
        op = report.operators[report.peak_operator]
        ax.annotate(f"op {op.index} {op.opcode}", (op.index, report.peak / 1024),
                    xytext=(4, 6), textcoords="offset points", ha="left", color="tab:red")
    ax.add_patch(Rectangle((0, 0), 0, 0, facecolor="tab:blue", label="tensor"))
    ax.add_patch(Rectangle((0, 0), 0, 0, facecolor="tab:orange", label="scratch"))
    ax.set_xlim(-1.5, n - 0.5)
    ax.set_ylim(0, top / 1024 * 1.12 or 1)
    ax.set_xlabel("operator")
    ax.set_ylabel("arena offset (KiB)")
    ax.set_title(f"{report.name}: TFLM non-persistent arena plan")
    ax.legend(loc="upper right", fontsize=8)


def _draw_tops(ax, reports, spans) -> None:
    """Each plan's arena top over the unfused model's operators: an operator standing for n
    builtins (an MCUF operator) spans n of them, so the curves line up block by block."""
    for report, span in zip(reports, spans):
        ends = np.cumsum(span)
        ax.step(np.concatenate([[0], ends]), [m.top / 1024 for m in report.operators]
                + [report.operators[-1].top / 1024], where="post", linewidth=1.2,
                label=f"{report.name}: peak {report.peak / 1024:.1f} KiB")
    ax.set_xlim(0, max(int(np.sum(span)) for span in spans))
    ax.set_ylim(0, max(r.peak for r in reports) / 1024 * 1.12 or 1)
    ax.set_xlabel("operator of the unfused model (a fused operator spans the builtins it replaced)")
    ax.set_ylabel("arena in use (KiB)")
    ax.set_title("non-persistent arena over operator order")
    ax.legend(loc="upper right", fontsize=8)


def plot_arena(report: MemoryReport, path, *others: MemoryReport, spans=None) -> None:
    """A PNG of the planned arena over operator order: each buffer a rectangle, the peak marked;
    with `others`, their plans beside it on the same offset scale, and above them one plot of
    every plan's arena top, aligned by `spans` (per report, the builtins each operator stands for,
    `compiler.unfuse.builtin_counts`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [report, *others]
    widths = [min(4 + max(len(r.operators), 1) / 8, 30) for r in reports]
    rows = 2 if others and spans else 1
    fig = plt.figure(figsize=(sum(widths), 6 * rows))
    grid = fig.add_gridspec(rows, len(reports), width_ratios=widths)
    if rows == 2:
        _draw_tops(fig.add_subplot(grid[0, :]), reports, spans)
    top = max(r.peak for r in reports)
    for column, each in enumerate(reports):
        _draw_arena(fig.add_subplot(grid[rows - 1, column]), each, top)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
