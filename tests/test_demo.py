"""The demo's accuracy targets (slow: trains the digits supernet for the full demo schedule)."""
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
