"""A KerasTuner chief and workers on loopback, each an `mcuformer-tf tune` process (for the
distributed tuning tests)."""
import os
import socket
import subprocess
import sys

BUDGET = ("--target", "custom", "--sram", "42KiB", "--flash", "1MiB")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(role: str, run_path, out, port: int, trials: int, *options: str, **env: str) -> subprocess.Popen:
    """`mcuformer-tf tune` as KerasTuner's `role` (chief, worker0, ...) of a search of `trials`
    trials into `out`, over the oracle at `port`; `env` adds environment variables."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), KERASTUNER_TUNER_ID=role,
               KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "mcuformer_tf", "tune", "--supernet", str(run_path), "--out", str(out), *BUDGET,
         "--trials", str(trials), "--population", "4", "--parents", "2", *options],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
