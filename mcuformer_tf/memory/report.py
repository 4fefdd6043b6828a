"""Where a model's bytes go in stock TFLM: the non-persistent arena per operator, and flash.

The arena is TFLM's own plan (`tflm.arena_plan`, with the MCUF ops' scratch from the compiler's
kernels); its peak is the "head" TFLM reports. The persistent tail (kernel data, BATCH_MATMUL's
transposed operands, tensor structs) is not modelled here: `arena_search` measures it. Flash is the
flatbuffer's bytes by what they hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mcuformer_tf.compiler.unfuse import MCUF_SCRATCH
from mcuformer_tf.tflm.arena_plan import UNMODELLED_SCRATCH, greedy_plan, planned_buffers
from mcuformer_tf.tflm.tflite_graph import read_model

# Which input of an operator is its weights and which its bias.
WEIGHT_BIAS_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
                      "TRANSPOSE_CONV": (1, 3)}


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
    int4_weights: int = 0  # part of weights: packed INT4 tensors (two weights a byte)

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
    int4_weights = sum(lengths[b] for b in {tensor_buffers[t.index] for t in graph.tensors if t.int4}
                       if role.get(b) == "weights")
    quantization = sum(t.quantization.scale.size * 4 + t.quantization.zero_point.size * 8
                       for t in graph.tensors if t.quantization is not None)
    return Flash(metadata=metadata, structure=len(raw) - sum(totals.values()) - metadata,
                 quantization=quantization, names=sum(len(t.name.encode()) for t in graph.tensors),
                 int4_weights=int4_weights, **totals)


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
    buffers = planned_buffers(graph, MCUF_SCRATCH)
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
                  or (op.is_custom and op.opcode not in MCUF_SCRATCH)]
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
    packed = f" (packed INT4: {f.int4_weights:,})" if f.int4_weights else ""
    lines.append(f"flash (the .tflite): {_kib(f.total)} = weights {f.weights:,}{packed} + biases "
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
