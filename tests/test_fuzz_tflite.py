"""Mutated .tflite files given to `compile` and `report`: a one-line error or a result, never a
traceback, a crash or a hang (500 seeded mutations of an exported and a compiled model)."""
import random
import signal

import pytest
from cli_runner import run_cli

from mcuformer_tf.compiler.pipeline import compile_model

MUTATIONS = 250  # per base model
SECONDS = 20  # per command: far above a healthy run; longer counts as a hang


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    kind = rng.randrange(4)
    if kind == 0:  # flip a few bits
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data)):]
    elif kind == 2:  # overwrite a 32-bit word with an extreme value
        at = rng.randrange(len(data) - 4)
        word = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, rng.getrandbits(32)])
        data[at:at + 4] = word.to_bytes(4, "little")
    else:  # duplicate a chunk somewhere else
        start = rng.randrange(len(data))
        chunk = data[start:start + rng.randint(1, 64)]
        at = rng.randrange(len(data))
        data[at:at] = chunk
    return bytes(data)


@pytest.fixture(scope="module")
def bases(digits_space, fresh_int8_tflite):
    unfused = fresh_int8_tflite(digits_space.smallest()).read_bytes()
    return {"exported": unfused, "compiled": compile_model(unfused).model_bytes}


def _alarm(signum, frame):
    raise TimeoutError(f"a command ran over {SECONDS} s")


@pytest.mark.parametrize("base", ["exported", "compiled"])
def test_mutated_models_give_a_result_or_one_line_error(bases, base, tmp_path):
    rng = random.Random(base)
    previous = signal.signal(signal.SIGALRM, _alarm)
    outcomes = {0: 0, 2: 0}
    try:
        for case in range(MUTATIONS):
            path = tmp_path / "mutated.tflite"
            path.write_bytes(_mutate(bases[base], rng))
            for command in (["report", path], ["compile", path, "-o", tmp_path / "out.tflite"]):
                signal.alarm(SECONDS)
                result = run_cli(*command)
                signal.alarm(0)
                label = f"case {case}, {command[0]}"
                assert result.exit_code in outcomes, (label, result.output, result.exception)
                assert result.exception is None or isinstance(result.exception, SystemExit), \
                    (label, repr(result.exception))
                if result.exit_code == 2:
                    lines = result.stderr.strip().splitlines()
                    assert len(lines) == 1 and lines[0].startswith("Error: "), (label, result.stderr)
                outcomes[result.exit_code] += 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    print(f"{base}: {outcomes[0]} results, {outcomes[2]} one-line errors")
    assert outcomes[2] > 0 and sum(outcomes.values()) == 2 * MUTATIONS
