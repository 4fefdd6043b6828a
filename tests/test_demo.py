"""The demo's targets (slow: trains the digits supernet for the full demo schedule, then exports).

Float subnets: largest >= 93%, smallest >= 85%. The exported int8 model in TFLM:
within 1.5 points of its float subnet. The demo tunes under its SRAM budget and exports the
tuned subnet; it leaves the model and the memory plot, and ends with the Cortex-M7 step (the
full firmware with TFLM_ROOT and TFLM_M7_LIB, else the kernels).
"""
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_reaches_its_accuracy_targets(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mcuformer_tf", "demo", "--out",
                             str(tmp_path / "demo")], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    found = dict(re.findall(r"val accuracy ([\d.]+)% \(360 images\): (\w+):", result.stdout)
                 [i][::-1] for i in range(2))
    assert float(found["largest"]) >= 93.0
    assert float(found["smallest"]) >= 85.0
    exported = re.search(r"val accuracy: float ([\d.]+)%, QAT [\d.]+%, int8 in TFLM ([\d.]+)%",
                         result.stdout)
    assert float(exported[2]) >= float(exported[1]) - 1.5
    assert re.search(r"^arena [\d,]+ bytes", result.stdout, re.M)
    from mcuformer_tf.nas.search_space import SubnetConfig

    tuned = SubnetConfig.load(tmp_path / "demo" / "tune" / "best_config.json")
    assert "rejected before a trial existed" in result.stdout
    assert f"export {tuned.describe()}: " in result.stdout  # the export takes the tuned subnet
    assert (tmp_path / "demo" / "model.tflite").stat().st_size > 0
    assert (tmp_path / "demo" / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last = result.stdout.strip().splitlines()[-1]  # the Cortex-M7 step: full firmware, or the kernels
    assert last.startswith(("one inference on the emulated Cortex-M7", "linked for stm32f746")), last
