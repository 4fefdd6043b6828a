"""The fused kernels' parameter checks (mcuf/params_check.h) against random and hostile structs.

5,100 random parameter structs (params_fuzz.py: fields drawn in range, most then pushed to
extremes or a required pointer set to NULL) go through the ctypes bindings of the ASan+UBSan
libmcuf in a child process: every call ends in MCUF_OK or MCUF_ERR_ARGUMENT, a refused struct never
runs, and the child ends without a sanitizer report within its time limit. The checks also name
the field they refuse, for the TFLM glue's log and for Python's McuformerError.
"""
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from params_fuzz import make

from mcuformer_tf.compiler import kernel_params as kp
from mcuformer_tf.compiler.kernels import MlpKernel
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm import host_runner

CASES = 5100
SECONDS = 300  # the whole child: far above its ~15 s; longer counts as a hang


def test_random_param_structs_end_in_a_status_under_asan_and_ubsan():
    env = dict(os.environ, **host_runner.sanitizer_env(),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent)] + sys.path))
    result = subprocess.run([sys.executable, str(Path(__file__).parent / "params_fuzz.py"), str(CASES), "18"],
                            env=env, capture_output=True, text=True, timeout=SECONDS)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr, result.stderr[-4000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    for kind, tally in counts.items():
        print(f"{kind}: {tally['ok']} runs ended OK, {tally['error']} MCUF_ERR_ARGUMENT "
              f"({tally['refused']} structs refused by the check), {tally['sized_only']} only checked")
        assert tally["valid_refused"] == 0  # every struct drawn in range is accepted
        assert tally["ok"] > 0 and tally["refused"] > 0
    assert sum(sum(t[k] for k in ("ok", "error", "sized_only")) for t in counts.values()) == CASES


@pytest.mark.parametrize("path, value, field", [
    ("fc1.layers[0].params.shift", 100, "fc1: fc->shift"),
    ("fc2.num_layers", 3, "fc2: l->num_layers"),
    ("hidden", 1 << 30, "fc1: l->layers[l->num_layers - 1].output_depth"),
    ("residual.output_offset", 128, "residual: a->output_offset"),
    ("depth", -1, "depth"),
])
def test_the_check_names_the_field_it_refuses(path, value, field):
    keep: list = []
    params = make("mlp", random.Random(0), keep)
    assert kp.refused_field(params) is None
    owner = params
    for part in path.replace("]", "").replace("[", ".").split(".")[:-1]:
        owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
    setattr(owner, path.split(".")[-1], value)
    assert kp.refused_field(params) == field
    assert kp.load().mcuf_mlp_get_buffer_size(params) == 0
    kernel = MlpKernel(params, 0, 1, 4, params.depth, keep)
    with pytest.raises(McuformerError, match=re.escape(f"MCUF_MLP: parameter {field} is outside")):
        kernel.buffer_size()
