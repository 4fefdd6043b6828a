"""Random parameter structs through the fused kernels' ctypes bindings (run by test_params_fuzz.py
in a child process on the ASan+UBSan libmcuf: `python params_fuzz.py CASES SEED`).

Each case builds an MLP, attention or patch-embedding struct whose every field is drawn within the
range mcuf/params_check.h documents (small sizes, random offsets, multipliers, shifts, per-channel
arrays, int8 or packed INT4 weights, optional pointers NULL or not), then, in most cases, sets one
to three fields to extreme values (0, -1, INT32_MIN/MAX, 2^16, a shift of 100, ...) or a required
pointer to NULL. Every pointer is then bound to a buffer of exactly the size the (mutated) struct states, tokens and
scratch too (scratch: *_get_buffer_size bytes), or to a 4-byte buffer where the check refuses the
struct, so any read or write the kernel makes beyond what its struct promises is an ASan report;
cases whose buffers would exceed MAX_BYTES, or whose work MAX_MACS, are only checked and sized. Prints one JSON line of
counts: per kernel, runs ending OK, runs ending MCUF_ERR_ARGUMENT, refused structs, sized-only.
"""
from __future__ import annotations

import ctypes
import json
import random
import sys

import numpy as np

from mcuformer_tf.compiler import kernel_params as kp

MAX_BYTES = 1 << 22
MAX_MACS = 1 << 22  # a case's multiply-accumulates: more is only checked and sized
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
EXTREMES = [0, -1, 1, INT32_MIN, INT32_MAX, 1 << 16, 1 << 20, 100, -100, 32, -32, 129, -129, 3]
KINDS = ("mlp", "attention", "patch_embed")


def _offset(rng):
    return rng.randint(-127, 128)


def _zero_point(rng):
    return rng.randint(-128, 127)


def _multiplier(rng):
    return rng.choice([0, rng.randint(0, INT32_MAX), rng.randint(1 << 30, INT32_MAX)])


def _activation(rng, struct):
    low = rng.choice([-128, rng.randint(-128, 127)])
    struct.activation_min, struct.activation_max = low, rng.choice([127, rng.randint(low, 127)])


def _fc(rng, output_depth, keep):
    fc = kp.FcParams(_offset(rng), rng.choice([0, _offset(rng)]), _zero_point(rng), 0, 0, _multiplier(rng),
                     rng.randint(-31, 30), weight_bits=rng.choice([8, 4]))
    _activation(rng, fc)
    if rng.random() < 0.3:
        fc.multipliers = kp.int32_array([_multiplier(rng) for _ in range(output_depth)], keep)  # bound later
        fc.shifts = kp.int32_array([rng.randint(-31, 30) for _ in range(output_depth)], keep)
    return fc


def _add(rng):
    add = kp.AddParams(rng.randint(0, 31), _offset(rng), _multiplier(rng), rng.randint(-31, 0), _offset(rng),
                       _multiplier(rng), rng.randint(-31, 0), _zero_point(rng), _multiplier(rng),
                       rng.randint(-31, 0))
    _activation(rng, add)
    return add


def _mul(rng):
    mul = kp.MulParams(_offset(rng), _offset(rng), _zero_point(rng), _multiplier(rng), rng.randint(-31, 30))
    _activation(rng, mul)
    return mul


def _mean(rng):
    return kp.MeanParams(_zero_point(rng), _zero_point(rng), _multiplier(rng), rng.randint(-31, 30))


def _layer_norm(rng):
    return kp.LayerNorm(
        mean=_mean(rng), centre=_add(rng), square=_mul(rng), variance=_mean(rng), add_epsilon=_add(rng),
        rsqrt=kp.RsqrtParams(_zero_point(rng), _zero_point(rng), _multiplier(rng), rng.randint(-11, 50)),
        normalize=_mul(rng), scale=_mul(rng), offset=_add(rng))


def _linear(rng, depth_in, depth_out, keep):
    dims = [depth_in] + ([rng.randint(1, 24)] if rng.random() < 0.5 else []) + [depth_out]
    linear = kp.Linear(num_layers=len(dims) - 1)
    for i in range(len(dims) - 1):
        linear.layers[i] = kp.FcLayer(params=_fc(rng, dims[i + 1], keep), input_depth=dims[i],
                                      output_depth=dims[i + 1])
    return linear


def _batch_matmul(rng, transposed):
    return kp.BatchMatmulParams(_offset(rng), _offset(rng), _zero_point(rng), _multiplier(rng),
                                rng.randint(-31, 30), transposed)


def make(kind: str, rng: random.Random, keep: list) -> ctypes.Structure:
    """A struct of `kind` with every field within its documented range (pointers bound later)."""
    if kind == "patch_embed":
        patch = rng.randint(1, 8)
        depth = rng.randint(1, 40)
        p = kp.PatchEmbedParams(patch * rng.randint(1, 5), patch * rng.randint(1, 5), rng.randint(1, 4), patch,
                                depth)
        p.conv, p.position = _fc(rng, depth, keep), _add(rng)
        p.conv.weights_offset = 0
        return p
    depth = rng.randint(1, 48)
    if kind == "mlp":
        hidden = rng.randint(1, 96)
        p = kp.MlpParams(depth=depth, hidden=hidden, ln=_layer_norm(rng), fc1=_linear(rng, depth, hidden, keep),
                         gelu_scale=_mul(rng), gelu_gate=_mul(rng), fc2=_linear(rng, hidden, depth, keep),
                         residual=_add(rng))
        radius = rng.choice([0, rng.randint(1, INT32_MAX)])
        p.gelu_sigmoid = kp.LogisticParams(_zero_point(rng), radius, _multiplier(rng), rng.randint(-31, 30))
        return p
    heads, head_dim = rng.randint(1, 3), rng.randint(1, 16)
    p = kp.AttentionParams(tokens=rng.randint(1, 20), depth=depth, heads=heads, head_dim=head_dim,
                           ln=_layer_norm(rng), qkv=_linear(rng, depth, 3 * heads * head_dim, keep),
                           scores=_batch_matmul(rng, 1), context=_batch_matmul(rng, 0),
                           proj=_linear(rng, heads * head_dim, depth, keep), residual=_add(rng))
    p.softmax = kp.SoftmaxParams(_multiplier(rng), rng.randint(0, 31), -rng.randint(0, INT32_MAX))
    return p


def _int_fields(struct, prefix=""):
    """(owner, name, path) of every int32 field, nested structs and arrays included."""
    for name, kind in struct._fields_:
        value = getattr(struct, name)
        if kind is ctypes.c_int32:
            yield struct, name, prefix + name
        elif isinstance(value, ctypes.Structure):
            yield from _int_fields(value, f"{prefix}{name}.")
        elif isinstance(value, ctypes.Array):
            for i, item in enumerate(value):
                yield from _int_fields(item, f"{prefix}{name}[{i}].")


REQUIRED_POINTERS = {"mlp": ["ln.epsilon", "gelu_coefficient", "fc1.layers[0].weights", "fc2.layers[0].weights"],
                     "attention": ["ln.epsilon", "qkv.layers[0].weights", "proj.layers[0].weights"],
                     "patch_embed": ["weights", "position_table"]}


def _resolve(struct, path):
    *owners, name = path.replace("]", "").replace("[", ".").split(".")
    for part in owners:
        struct = struct[int(part)] if part.isdigit() else getattr(struct, part)
    return struct, name


def mutate(kind, p, rng: random.Random) -> set:
    """Sets 1-3 fields of p to extreme values; returns the pointers to leave NULL."""
    fields = list(_int_fields(p))
    nulls = set()
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.1:
            nulls.add(rng.choice(REQUIRED_POINTERS[kind]))
        else:
            owner, name, _ = rng.choice(fields)
            setattr(owner, name, rng.choice(EXTREMES + [getattr(owner, name) + rng.choice([-1, 1])]))
    return nulls


class Buffers:
    """The arrays one case's pointers point to, sized as the struct states (MemoryError when too
    large), or all of 4 bytes (`tiny`: for a struct the check refuses, which must not be read)."""

    def __init__(self, rng: random.Random, tiny: bool):
        self.rng, self.keep, self.total, self.tiny = rng, [], 0, tiny

    def int8(self, size: int):
        size = 4 if self.tiny else max(int(size), 0)
        self.total += size
        if size < 1 or self.total > MAX_BYTES:
            raise MemoryError
        array = np.frombuffer(self.rng.randbytes(size), np.int8).copy()
        self.keep.append(array)
        return array

    def int32(self, count: int, low: int, high: int, exact: bool = False):
        """`count` random int32 values in [low, high] (4 when tiny, unless `exact`)."""
        count = 4 if self.tiny and not exact else max(int(count), 0)
        self.total += 4 * count
        if count < 1 or self.total > MAX_BYTES:
            raise MemoryError
        values = np.asarray([self.rng.randint(low, high) for _ in range(count)], np.int32)
        return kp.int32_array(values, self.keep)

    def scratch(self, size: int):
        """`size` bytes (4 when tiny), 4-byte aligned."""
        size = 4 if self.tiny else size
        self.tiny, tiny = False, self.tiny
        array = self.int8(size + 4)
        self.tiny = tiny
        start = (-array.ctypes.data) % 4
        return array[start:start + size]


def _bind_fc(fc: kp.FcParams, count: int, buffers: Buffers, rng):
    """Per-channel arrays of `count` values even for a refused struct: the check reads them (after
    every size it can compare with another)."""
    if fc.multipliers:
        fc.multipliers = buffers.int32(count, 0, INT32_MAX, exact=True)
        fc.shifts = buffers.int32(count, -31, 30, exact=True)


def bind_channels(kind, p, buffers: Buffers, rng):
    """The per-channel arrays, each of the output depth its layer states."""
    if kind == "patch_embed":
        return _bind_fc(p.conv, p.depth, buffers, rng)
    for linear in (p.fc1, p.fc2) if kind == "mlp" else (p.qkv, p.proj):
        for i in range(min(max(linear.num_layers, 0), 2)):
            _bind_fc(linear.layers[i].params, linear.layers[i].output_depth, buffers, rng)


def _weight_bytes(fc: kp.FcParams, count: int) -> int:
    """Bytes of `count` weights of fc's width: packed INT4 two a byte."""
    return (count + 1) // 2 if fc.weight_bits == 4 else count


def _bind_linear(linear: kp.Linear, buffers: Buffers, rng, bias: bool):
    for i in range(min(max(linear.num_layers, 0), 2)):
        layer = linear.layers[i]
        layer.weights = kp.p8(buffers.int8(_weight_bytes(layer.params, layer.output_depth * layer.input_depth)))
        if bias and rng.random() < 0.7:
            layer.bias = buffers.int32(layer.output_depth, INT32_MIN, INT32_MAX)


def bind(kind, p, nulls: set, buffers: Buffers, rng):
    """Points every pointer but the per-channel arrays at a buffer of the size p states (MemoryError
    when too large)."""
    if kind == "patch_embed":
        p.weights = kp.p8(buffers.int8(_weight_bytes(p.conv, p.depth * p.patch * p.patch * p.channels)))
        p.bias = buffers.int32(p.depth, INT32_MIN, INT32_MAX) if rng.random() < 0.7 else None
        tokens = (p.image_height // max(p.patch, 1)) * (p.image_width // max(p.patch, 1))
        p.position_table = kp.p8(buffers.int8(tokens * p.depth))
    else:
        p.ln.epsilon = kp.p8(buffers.int8(1))
        p.ln.gamma = kp.p8(buffers.int8(p.depth)) if rng.random() < 0.5 else None
        p.ln.beta = kp.p8(buffers.int8(p.depth)) if rng.random() < 0.5 else None
        first, second = (p.fc1, p.fc2) if kind == "mlp" else (p.qkv, p.proj)
        _bind_linear(first, buffers, rng, bias=True)
        _bind_linear(second, buffers, rng, bias=True)
        if kind == "mlp":
            p.gelu_coefficient = kp.p8(buffers.int8(1))
    for path in nulls:
        owner, name = _resolve(p, path)
        setattr(owner, name, None)


def _linear_macs(linear: kp.Linear) -> int:
    return sum(linear.layers[i].output_depth * linear.layers[i].input_depth
               for i in range(min(max(linear.num_layers, 0), 2)))


def macs(kind, p, n_tokens: int) -> int:
    """What running p costs, roughly: its multiply-accumulates."""
    if kind == "patch_embed":
        return p.image_height * p.image_width * p.channels * p.depth
    if kind == "mlp":
        return n_tokens * (_linear_macs(p.fc1) + _linear_macs(p.fc2) + p.depth + p.hidden)
    return p.tokens * (_linear_macs(p.qkv) + _linear_macs(p.proj) + 2 * p.tokens * p.heads * p.head_dim + p.depth)


def run_case(kind, p, buffers: Buffers, lib, rng) -> int:
    """The kernel's status on buffers of the sizes p states (tiny ones where the check refuses p)."""
    n_tokens = rng.choice([0, 1, 3, 4, 5, 9])
    if not buffers.tiny and macs(kind, p, n_tokens) > MAX_MACS:
        raise MemoryError
    if kind == "patch_embed":
        image = buffers.int8(p.image_height * p.image_width * p.channels)
        tokens = buffers.int8((p.image_height // max(p.patch, 1)) * (p.image_width // max(p.patch, 1)) * p.depth)
        scratch = buffers.scratch(max(lib.mcuf_patch_embed_get_buffer_size(ctypes.byref(p)), 4))
        return lib.mcuf_patch_embed(ctypes.byref(p), kp.p8(image), kp.p8(tokens), kp.p8(scratch))
    if kind == "mlp":
        if buffers.tiny:
            n_tokens = rng.choice([n_tokens, -1, INT32_MAX])
        tokens = buffers.int8(max(n_tokens * p.depth, 1))
        scratch = buffers.scratch(max(lib.mcuf_mlp_get_buffer_size(ctypes.byref(p)), 4))
        return lib.mcuf_mlp(ctypes.byref(p), kp.p8(tokens), n_tokens, kp.p8(scratch))
    tokens = buffers.int8(p.tokens * p.depth)
    scratch = buffers.scratch(max(lib.mcuf_attention_get_buffer_size(ctypes.byref(p)), 4))
    return lib.mcuf_attention(ctypes.byref(p), kp.p8(tokens), kp.p8(scratch))


def fuzz(cases: int, seed: int) -> dict:
    lib = kp.load(sanitize=True)
    rng = random.Random(seed)
    counts = {kind: {"ok": 0, "error": 0, "refused": 0, "sized_only": 0, "valid_refused": 0} for kind in KINDS}
    for case in range(cases):
        kind = KINDS[case % len(KINDS)]
        keep: list = []
        p = make(kind, rng, keep)
        mutated = rng.random() < 0.8
        nulls = mutate(kind, p, rng) if mutated else set()
        tally = counts[kind]
        buffers = Buffers(rng, tiny=False)
        try:
            bind_channels(kind, p, buffers, rng)
            refused = kp.refused_field(p, sanitize=True) is not None
            tally["valid_refused"] += refused and not mutated
            tally["refused"] += refused
            buffers.tiny = refused
            bind(kind, p, nulls, buffers, rng)
            status = run_case(kind, p, buffers, lib, rng)
        except MemoryError:
            tally["sized_only"] += 1
            continue
        assert status in (kp.MCUF_OK, -1), (case, kind, status)
        assert not (refused and status == kp.MCUF_OK), (case, kind, "a refused struct ran")
        tally["ok" if status == kp.MCUF_OK else "error"] += 1
    return counts


if __name__ == "__main__":
    print(json.dumps(fuzz(int(sys.argv[1]), int(sys.argv[2]))))
