"""Builds our C library and the TFLM host runner (tflm_custom_ops/), and runs models in it.

The C library libmcuf needs only CMake and a C compiler. The host runner
`mcuf_run` also needs the user's tflite-micro tree (`TFLM_ROOT`) and its host
`libtensorflow-microlite.a` built by TFLM's own Makefile (found under
`TFLM_ROOT/gen/`, or given as `TFLM_LIB`); see docs/tflm-host-runner.md.
Builds are cached under ~/.cache/mcuformer-tf/, keyed by a hash of our sources,
of where they are (a CMake build tree belongs to one source tree: two clones
with the same sources must not share one, or deleting the first breaks the
second's build) and of the TFLM paths, so only a change rebuilds.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from mcuformer_tf.errors import McuformerError

SOURCES_DIR = Path(__file__).resolve().parents[2] / "tflm_custom_ops"
CACHE_DIR = Path.home() / ".cache" / "mcuformer-tf"
DOCS = "docs/tflm-host-runner.md"
_SOURCE_SUFFIXES = {".c", ".cc", ".h", ".txt"}  # C/C++ sources and CMakeLists.txt
_RESOLVER_HEADER = "tensorflow/lite/micro/micro_mutable_op_resolver.h"
_EXIT_USAGE = 2
_EXIT_TFLM = 3
ARENA_ALIGNMENT = 16
GENEROUS_ARENA = 64 << 20
_built: set[Path] = set()


class TflmRunError(McuformerError):
    """TFLM could not allocate or invoke the model (or crashed): read as "arena too small"."""


def _sources_hash(*extra: str) -> str:
    if not (SOURCES_DIR / "CMakeLists.txt").is_file():
        raise McuformerError(
            f"{SOURCES_DIR} not found: the C library builds from a source checkout of mcuformer-tf")
    digest = hashlib.sha256(str(SOURCES_DIR).encode())
    for path in sorted(p for p in SOURCES_DIR.rglob("*") if p.suffix in _SOURCE_SUFFIXES):
        digest.update(str(path.relative_to(SOURCES_DIR)).encode() + b"\0" + path.read_bytes())
    for item in extra:
        digest.update(b"\0" + item.encode())
    return digest.hexdigest()[:16]


def _tflm_paths() -> tuple[Path, Path] | str:
    """(TFLM_ROOT, TFLM_LIB) from the environment, or why they are not usable."""
    root_text = os.environ.get("TFLM_ROOT", "")
    if not root_text:
        return (f"TFLM_ROOT not set: the host runner needs a tflite-micro tree and its host "
                f"microlite library (see {DOCS})")
    root = Path(root_text).expanduser().resolve()
    if not (root / _RESOLVER_HEADER).is_file():
        return f"TFLM_ROOT={root_text} is not a tflite-micro tree (no {_RESOLVER_HEADER})"
    lib_text = os.environ.get("TFLM_LIB", "")
    if lib_text:
        lib = Path(lib_text).expanduser().resolve()
        return (root, lib) if lib.is_file() else f"TFLM_LIB={lib_text} does not exist"
    host = f"{platform.system().lower()}_{platform.machine()}_"
    libs = sorted(root.glob(f"gen/{host}*/lib/libtensorflow-microlite.a"))
    if len(libs) == 1:
        return root, libs[0]
    if not libs:
        return (f"TFLM_ROOT={root_text} has no gen/{host}*/lib/libtensorflow-microlite.a: build "
                f"it there with 'make -f tensorflow/lite/micro/tools/make/Makefile microlite' "
                f"or set TFLM_LIB (see {DOCS})")
    return f"several host microlite libraries under {root}/gen/: set TFLM_LIB to one of them"


def host_runner_skip_reason() -> str | None:
    """Why the host runner cannot be built here (one line), or None when it can."""
    if shutil.which("cmake") is None:
        return "cmake not found: the host runner is built with CMake"
    paths = _tflm_paths()
    return paths if isinstance(paths, str) else None


def _cmake_build(build_dir: Path, target: str, defines: dict[str, str]) -> None:
    """Configures (once) and builds one target of tflm_custom_ops into build_dir."""
    if build_dir in _built:
        return
    if shutil.which("cmake") is None:
        raise McuformerError("cmake not found: install CMake to build tflm_custom_ops")
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "build.log"
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        steps = [["cmake", "--build", str(build_dir), "--target", target, "-j", str(os.cpu_count() or 1)]]
        if not (build_dir / "CMakeCache.txt").is_file():
            configure = ["cmake", "-S", str(SOURCES_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"]
            steps.insert(0, configure + [f"-D{key}={value}" for key, value in defines.items()])
        with open(log, "w") as out:
            for step in steps:
                if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
                    raise McuformerError(f"building {target} in {build_dir} failed: see {log}")
    _built.add(build_dir)


def _library_build_dir(sanitize: bool) -> Path:
    return CACHE_DIR / f"mcuf-lib-{_sources_hash(f'sanitize={sanitize}')}"


def build_mcuf_library(sanitize: bool = False) -> Path:
    """Builds the shared libmcuf (ASan+UBSan when sanitize) and returns its path."""
    build_dir = _library_build_dir(sanitize)
    _cmake_build(build_dir, "mcuf_shared", {"MCUF_SANITIZE": "ON" if sanitize else "OFF", "TFLM_ROOT": ""})
    suffix = ".dylib" if platform.system() == "Darwin" else ".so"
    return build_dir / f"libmcuf{suffix}"


def sanitizer_env() -> dict[str, str]:
    """Environment additions a child process needs to load the sanitized libmcuf.

    ASan's runtime must come first in a process, so a Python that loads the
    sanitized library through ctypes has to start with it preloaded (Python's
    own allocations are not ours to report, so leak detection is off).
    """
    build_mcuf_library(sanitize=True)
    cache = (_library_build_dir(True) / "CMakeCache.txt").read_text()
    compiler = next(line.split("=", 1)[1] for line in cache.splitlines()
                    if line.startswith("CMAKE_C_COMPILER:"))
    runtime = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return {"LD_PRELOAD": runtime, "ASAN_OPTIONS": "detect_leaks=0"}


def build_host_runner(build_dir: Path | None = None, sanitize: bool = False) -> Path | None:
    """Builds mcuf_run over TFLM_ROOT's microlite (our glue and kernels with ASan+UBSan when
    sanitize); None when host_runner_skip_reason() says why not."""
    if host_runner_skip_reason() is not None:
        return None
    root, lib = _tflm_paths()
    if build_dir is None:
        flavour = "-sanitized" if sanitize else ""
        build_dir = CACHE_DIR / f"host-runner{flavour}-{_sources_hash(str(root), str(lib))}"
    _cmake_build(Path(build_dir), "mcuf_run", {"TFLM_ROOT": str(root), "TFLM_LIB": str(lib),
                                               "MCUF_SANITIZE": "ON" if sanitize else "OFF"})
    return Path(build_dir) / "mcuf_run"


def run_host(model_path: str | os.PathLike, input_bytes: bytes | None,
             arena_size: int) -> tuple[list[bytes], int]:
    """Runs a .tflite once in the host runner: (output tensors' bytes, arena_used_bytes).

    input_bytes fills input tensor 0 (None: zeros). Raises TflmRunError when TFLM
    cannot allocate or invoke within arena_size bytes, or crashes.
    """
    runner = build_host_runner()
    if runner is None:
        raise McuformerError(host_runner_skip_reason())
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(runner), str(model_path), "--arena", str(int(arena_size))]
        if input_bytes is not None:
            input_path = Path(tmp) / "input.bin"
            input_path.write_bytes(input_bytes)
            command += ["--input", str(input_path)]
        result = subprocess.run(command, capture_output=True, text=True)
    error = (result.stderr.strip().splitlines() or [""])[-1]
    if result.returncode < 0:
        raise TflmRunError(f"mcuf_run crashed (signal {-result.returncode}) with an arena of "
                           f"{arena_size} bytes")
    if result.returncode == _EXIT_TFLM:
        raise TflmRunError(error)
    if result.returncode != 0:
        raise McuformerError(error or f"mcuf_run failed with exit code {result.returncode}")
    outputs: dict[int, bytes] = {}
    used = None
    for line in result.stdout.splitlines():
        words = line.split()
        if words[:1] == ["output"]:
            outputs[int(words[1])] = bytes.fromhex(words[2] if len(words) > 2 else "")
        elif words[:1] == ["arena_used_bytes"]:
            used = int(words[1])
    if used is None or sorted(outputs) != list(range(len(outputs))):
        raise McuformerError(f"mcuf_run printed no complete result for {model_path}")
    return [outputs[index] for index in range(len(outputs))], used


def find_host_arena(model_path: str | os.PathLike) -> tuple[int, int]:
    """The smallest arena (a multiple of 16 bytes) with which the host runner allocates and
    invokes the model, and TFLM's arena_used_bytes with it.

    One run with a generous arena gives the usage; no smaller arena can hold it. Above it the
    search gallops up (TFLM's planner borrows free arena while it plans), then bisects.
    """
    def used_with(arena: int) -> int | None:
        try:
            return run_host(model_path, None, arena)[1]
        except TflmRunError:
            return None

    used = used_with(GENEROUS_ARENA)
    if used is None:
        raise McuformerError(f"TFLM does not run {model_path} in the host runner with a "
                             f"{GENEROUS_ARENA >> 20} MiB arena")
    failing = -(-used // ARENA_ALIGNMENT) * ARENA_ALIGNMENT - ARENA_ALIGNMENT
    passing, passing_used, step = None, used, ARENA_ALIGNMENT
    while passing is None:  # gallop: the usage, then 16, 64, 256 … bytes above it
        trial = failing + step
        result = used_with(trial) if trial < GENEROUS_ARENA else used
        if result is None:
            failing, step = trial, step * 4
        else:
            passing, passing_used = min(trial, GENEROUS_ARENA), result
    while passing - failing > ARENA_ALIGNMENT:
        middle = (failing + passing) // 2 // ARENA_ALIGNMENT * ARENA_ALIGNMENT
        result = used_with(middle)
        if result is None:
            failing = middle
        else:
            passing, passing_used = middle, result
    return passing, passing_used
