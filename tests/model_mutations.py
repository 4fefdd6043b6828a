"""Hostile variants of a fused .tflite, aimed at what the MCUF glue reads: the custom options
blob (its values, types and bytes), the shapes, types and quantisation of the fused ops' tensors,
the constant buffers, the operators' tensor indices and the offline memory plan; plus random
byte-level damage of the whole file.

`mutate(raw, rng)` returns (kind, bytes); the structured kinds edit the model through the TFLite
schema's object API and repack it, so they reach Prepare past the flatbuffer's own checks.
"""
from __future__ import annotations

import math
import random
import struct

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

EXTREME_INTS = [0, -1, 1, 2, 3, 255, 1 << 15, 1 << 16, 1 << 20, 2**31 - 1, -(2**31), 2**32, 2**40]
EXTREME_FLOATS = [0.0, -1.0, math.nan, math.inf, -math.inf, 1e38, 3.4e38, 1e-45, 1e-30, 1e30, 2.0**-24]


def _mcuf_ops(model) -> list:
    codes = model.operatorCodes
    return [op for op in model.subgraphs[0].operators
            if (codes[op.opcodeIndex].customCode or b"").startswith(b"MCUF_")]


def _mcuf_tensors(model) -> list[int]:
    return sorted({t for op in _mcuf_ops(model) for t in list(op.inputs) + list(op.outputs) if t >= 0})


def pack(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _options_value(options: dict, rng: random.Random) -> None:
    """One value of a decoded options map made hostile: a number, a type, a key or a map."""
    section = rng.choice([k for k in options if isinstance(options[k], dict)] or [None])
    if section is None or rng.random() < 0.1:
        options[rng.choice(list(options))] = rng.choice([None, 7, "text", [1, 2], {}, 1.5])
        return
    entries = options[section]
    if not entries or rng.random() < 0.1:
        options.pop(section)
        return
    key = rng.choice(list(entries))
    roll = rng.random()
    if roll < 0.15:
        entries.pop(key)
    elif roll < 0.3:
        entries[key] = rng.choice(["text", [1, 2, 3], {"x": 1}, None, True])
    elif isinstance(entries[key], float) or section == "scale":
        entries[key] = rng.choice(EXTREME_FLOATS + [rng.uniform(-1, 1)])
    else:
        entries[key] = rng.choice(EXTREME_INTS + [-129, 128, 1000, 1.5, -2**63])


def _decodes(blob: bytes) -> bool:
    """Whether the options blob is still a flexbuffer Python reads (an earlier mutation may have
    broken it: flexbuffers reports that by any exception)."""
    try:
        flexbuffers.Loads(blob)
    except Exception:
        return False
    return True


def _damage(data: bytearray, rng: random.Random, kind: int, max_flips: int, words: tuple[int, ...]) -> None:
    """Damages data in place: kind 0 flips up to max_flips bits, 1 truncates it, 2 overwrites a
    32-bit word with one of words or a random one."""
    if kind == 0:
        for _ in range(rng.randint(1, max_flips)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del data[rng.randrange(len(data)):]
    else:
        at = rng.randrange(max(1, len(data) - 4))
        data[at:at + 4] = struct.pack("<I", rng.choice([*words, rng.getrandbits(32)]))


def _options(model, rng: random.Random) -> None:
    op = rng.choice(_mcuf_ops(model))
    blob = bytes(op.customOptions)
    if rng.random() < 0.6 and _decodes(blob):
        options = flexbuffers.Loads(blob)
        for _ in range(rng.randint(1, 3)):
            if isinstance(options, dict) and options:
                _options_value(options, rng)
        op.customOptions = list(flexbuffers.Dumps(options))
        return
    data = bytearray(blob)
    kind = rng.randrange(4)
    if kind < 3:
        _damage(data, rng, kind, max_flips=6, words=(0, 0xFFFFFFFF, 0x7FFFFFFF))
    else:  # the root's byte width and type, the last two bytes
        data[-rng.randint(1, 2)] = rng.choice([0, 1, 3, 8, 16, 0x7F, 0xFF])
    op.customOptions = list(data)


def _shape(model, rng: random.Random) -> None:
    tensor = model.subgraphs[0].tensors[rng.choice(_mcuf_tensors(model))]
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    roll = rng.random()
    if roll < 0.2 or not shape:
        shape = [rng.choice(EXTREME_INTS[:9]) for _ in range(rng.randint(0, 5))]
    elif roll < 0.4:
        shape = shape[:-1] if rng.random() < 0.5 else shape + [rng.choice([1, 2, 3])]
    else:
        at = rng.randrange(len(shape))
        shape[at] = rng.choice([v for v in EXTREME_INTS if -(2**31) <= v < 2**31] + [shape[at] + 1,
                                                                                   shape[at] - 1])
    tensor.shape = np.array(shape, np.int32)


def _buffer(model, rng: random.Random) -> None:
    tensors = [model.subgraphs[0].tensors[t] for t in _mcuf_tensors(model)]
    constants = [t for t in tensors if t.buffer > 0 and model.buffers[t.buffer].data is not None]
    tensor = rng.choice(constants or tensors)
    roll = rng.random()
    if roll < 0.3:
        tensor.buffer = rng.choice([0, len(model.buffers) - 1, rng.randrange(len(model.buffers))])
    else:
        buffer = model.buffers[tensor.buffer]
        data = np.asarray(buffer.data if buffer.data is not None else [], np.uint8)
        if roll < 0.6 and data.size:
            data = data[:rng.randrange(data.size)]
        elif roll < 0.8:
            data = np.concatenate([data, np.full(rng.choice([1, 3, 64]), 0x7F, np.uint8)])
        else:
            data = np.frombuffer(bytes(rng.getrandbits(8) for _ in range(data.size)), np.uint8).copy()
        buffer.data = data if data.size else None


def _quantization(model, rng: random.Random) -> None:
    tensor = model.subgraphs[0].tensors[rng.choice(_mcuf_tensors(model))]
    roll = rng.random()
    if roll < 0.15 or tensor.quantization is None:
        tensor.quantization = None if roll < 0.1 else schema.QuantizationParametersT()
        return
    quant = tensor.quantization
    scales = np.asarray(quant.scale if quant.scale is not None else [1.0], np.float32)
    if roll < 0.45:
        scales = np.full(max(1, scales.size), rng.choice(EXTREME_FLOATS), np.float32)
        quant.scale = scales
    elif roll < 0.7:
        quant.zeroPoint = np.full(max(1, scales.size), rng.choice([-129, 128, 1000, 2**31 - 1, -(2**31)]),
                                  np.int64)
    elif roll < 0.85:
        quant.scale = np.resize(scales, rng.choice([0, 2, scales.size + 1, 3]))
    else:
        quant.zeroPoint = np.zeros(rng.choice([0, 2, 5]), np.int64)


def _type(model, rng: random.Random) -> None:
    tensor = model.subgraphs[0].tensors[rng.choice(_mcuf_tensors(model))]
    tensor.type = rng.choice([0, 1, 2, 3, 7, 9, 10, 17])  # float32, float16, int32, uint8, int16, int8, …


def _indices(model, rng: random.Random) -> None:
    op = rng.choice(_mcuf_ops(model))
    count = len(model.subgraphs[0].tensors)
    inputs = [int(i) for i in op.inputs]
    roll = rng.random()
    if roll < 0.7:
        at = rng.randrange(len(inputs))
        inputs[at] = rng.choice([-1, 0, count - 1, rng.randrange(count)])
    elif roll < 0.85:
        inputs = inputs[:-1]
    else:
        inputs = inputs + [rng.randrange(count)]
    op.inputs = np.array(inputs, np.int32)


def _plan(model, rng: random.Random) -> None:
    entries = [m for m in model.metadata if m.name == b"OfflineMemoryAllocation"]
    if not entries:
        return _shape(model, rng)
    data = np.frombuffer(bytes(model.buffers[entries[0].buffer].data), np.int32).copy()
    at = rng.randrange(data.size)
    data[at] = rng.choice([-1, -2, 0, 1, 2**30, 2**31 - 1, -(2**31), data[at] + 1, data[at] + 4096])
    model.buffers[entries[0].buffer].data = np.frombuffer(data.tobytes(), np.uint8)


def _bytes(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    _damage(data, rng, rng.randrange(3), max_flips=8, words=(0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000))
    return bytes(data)


STRUCTURED = {"options": _options, "shape": _shape, "buffer": _buffer, "quantization": _quantization,
              "type": _type, "indices": _indices, "plan": _plan}
KINDS = list(STRUCTURED) + ["bytes"]


def mutate(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One hostile variant of the fused model `raw`: (its kind, its bytes)."""
    kind = rng.choice(KINDS)
    if kind == "bytes":
        return kind, _bytes(raw, rng)
    model = schema.ModelT.InitFromPackedBuf(raw, 0)
    for _ in range(rng.choice([1, 1, 1, 2])):
        STRUCTURED[kind](model, rng)
    return kind, pack(model)
