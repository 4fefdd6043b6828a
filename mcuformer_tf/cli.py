"""The `mcuformer-tf` command line: one command per arrow of the chain (DESIGN.md §1).

Mistakes a user can fix end in one line on stderr and exit code 2, never a
traceback. Arguments are checked before anything heavy is imported, and
TensorFlow is imported only by the commands that need it. What native libraries
(TensorFlow, absl, oneDNN, TFLM) write to the process's stderr goes to
NATIVE_LOG instead of the terminal, unless `--verbose`.
"""
from __future__ import annotations

import io
import json
import os
import random
import sys
from pathlib import Path

import click

from mcuformer_tf.board.targets import TARGETS
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.data_spec import check_data_spec
from mcuformer_tf.nas.search_space import PRESETS, WEIGHT_BITS, SearchSpace
from mcuformer_tf.nas.train_settings import (
    PRECISIONS,
    RECIPES,
    STRATEGIES,
    TrainSettings,
    recipe_settings,
    writes_run_files,
)
from tuner.tune_settings import TuneSettings


class UsageProblem(click.ClickException):
    """A McuformerError as click reports it: `Error: <one line>`, exit code 2."""

    exit_code = 2


class Commands(click.Group):
    """Turns McuformerError (and unreadable files) raised by any command into UsageProblem."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except McuformerError as err:
            raise UsageProblem(str(err)) from None
        except OSError as err:
            raise UsageProblem(f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")) from None


SPACE_HELP = f"Search space: a preset ({', '.join(PRESETS)}) or a .yaml/.json file."
DEMO_QAT_EPOCHS = 4
# The demo tunes for an STM32F746 whose application leaves the model 48 KiB of its SRAM (24 KiB
# of it the runtime's): under the fused plan that rejects about 45% of the digits space, most
# patch-4 subnets among them, so the search has to choose.
DEMO_SRAM, DEMO_TRIALS = "48KiB", 60
DATA_HELP = ("Data: digits (built in), imagefolder:PATH (ImageNet layout), cifar10:PATH, "
             "tfds:NAME[:TRAIN,VAL] (prepared in --data-dir).")


NATIVE_LOG = Path.home() / ".cache" / "mcuformer-tf" / "native-stderr.log"


def _native_stderr_to_log(ctx: click.Context) -> None:
    """Point file descriptor 2 at NATIVE_LOG (native libraries write there) and keep Python's
    sys.stderr, and so click's errors, on the terminal; restored when the command ends. Only where
    sys.stderr is the process's fd 2 (not under click's test runner)."""
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, io.UnsupportedOperation):
        return
    NATIVE_LOG.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal, python_stderr = os.dup(2), sys.stderr
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(terminal), "wb"), encoding=python_stderr.encoding,
                                  errors=python_stderr.errors, line_buffering=True)
    with open(NATIVE_LOG, "wb") as log:
        os.dup2(log.fileno(), 2)

    def restore():
        sys.stderr.flush()
        os.dup2(terminal, 2)
        os.close(terminal)
        sys.stderr = python_stderr

    ctx.call_on_close(restore)


@click.group(cls=Commands)
@click.version_option(package_name="mcuformer-tf")
@click.option("--verbose", is_flag=True,
              help=f"Show what TensorFlow and TFLM print at start-up (otherwise in {NATIVE_LOG}).")
@click.pass_context
def main(ctx, verbose):
    """Put the most accurate vision transformer that fits on a Cortex-M7."""
    if not verbose:
        _native_stderr_to_log(ctx)


@main.command()
@click.option("--space", "space_name", default="digits", show_default=True, help=SPACE_HELP)
@click.option("--pick", type=click.Choice(["largest", "smallest", "random"]), default="random",
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the config here (JSON) instead of printing it.")
def sample(space_name, pick, seed, output):
    """Print (or write) a subnet config of a search space."""
    space = SearchSpace.load(space_name)
    config = {"largest": space.largest, "smallest": space.smallest,
              "random": lambda: space.sample(random.Random(seed))}[pick]()
    if output:
        config.save(output)
        click.echo(f"{config.describe()} -> {output}")
    else:
        click.echo(json.dumps(config.to_dict(), indent=2))


def _train(out, space_name, data_spec, settings, strategy, resume, data_dir=None, init_from=None):
    from mcuformer_tf.nas.run_dir import RunDir

    if strategy not in STRATEGIES:
        raise McuformerError(f"unknown strategy {strategy!r} (use one of: {', '.join(STRATEGIES)})")
    if init_from is not None:
        from mcuformer_tf.nas.state_dict import check_state_dict_path

        check_state_dict_path(init_from)
    run, chief = RunDir(out), strategy != "multi-worker" or writes_run_files()
    if resume and run.exists():
        spec = run.spec()
        space = SearchSpace.from_dict(spec["space"])
        for given, recorded, what in ((space_name, space.name, "space"),
                                      (data_spec, spec["data"], "data")):
            if given is not None and given != recorded:
                raise McuformerError(f"--{what} {given} differs from the run's {what} {recorded} "
                                     f"in {out}; drop --{what} to resume")
        data_spec, data_dir = spec["data"], data_dir or spec.get("data_dir")
        init_from = init_from or spec.get("init_from")
        # the run continues with its recorded recipe; only the epoch count is the command's
        settings = TrainSettings(**{**spec.get("settings", {}), "epochs": settings.epochs})
    else:
        if run.exists() and chief:
            raise McuformerError(f"{out} already holds a training run; pass --resume to continue "
                                 "it or choose another --out")
        space = SearchSpace.load(space_name or "digits")
        data_spec = data_spec or "digits"
    check_data_spec(data_spec, data_dir)
    from mcuformer_tf.nas.distribution import make_strategy

    make_strategy(strategy)  # before any other TensorFlow op: multi-worker needs it so
    from mcuformer_tf.nas.data import load_data
    from mcuformer_tf.nas.training import train_supernet

    data = load_data(data_spec, max(space.image_size), data_dir)
    if chief and not run.exists():
        run.create({"space": space.to_dict(), "data": data_spec, "data_dir": data_dir,
                    "init_from": init_from and str(init_from),
                    "settings": {k: v for k, v in vars(settings).items() if k != "epochs"}})
    return train_supernet(space, data, run, settings, strategy, resume=resume, init_from=init_from)


def _train_options(func):
    options = [
        click.option("--space", "space_name", default=None, help=SPACE_HELP + "  [default: digits]"),
        click.option("--data", "data_spec", default=None, help=DATA_HELP + "  [default: digits]"),
        click.option("--epochs", type=click.IntRange(min=1), default=32, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True),
        click.option("--recipe", type=click.Choice(list(RECIPES)), default="digits", show_default=True,
                     help="Named defaults of the options below: digits (small data, no strong "
                          "augmentation) or deit (DeiT's ImageNet recipe)."),
        click.option("--lr", type=float, default=None,
                     help="Peak AdamW learning rate  [default: digits 2e-3, deit 5e-4 x batch / 512]."),
        click.option("--warmup-epochs", type=click.IntRange(min=0), default=None,
                     help="Linear warmup before the cosine decay  [default: digits 2, deit 5]."),
        click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="[default: digits 0, deit 0.1]"),
        click.option("--rand-augment", type=click.FloatRange(0, 10), default=None,
                     help="RandAugment magnitude, 0 off  [default: digits 0, deit 9]."),
        click.option("--mixup", type=click.FloatRange(min=0), default=None,
                     help="Mixup Beta alpha, 0 off  [default: digits 0, deit 0.8]."),
        click.option("--cutmix", type=click.FloatRange(min=0), default=None,
                     help="Cutmix Beta alpha, 0 off  [default: digits 0, deit 1.0]."),
        click.option("--random-erasing", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="Random erasing probability  [default: digits 0, deit 0.25]."),
        click.option("--drop-path", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="Stochastic depth of the last block  [default: digits 0, deit 0.1]."),
        click.option("--random-subnets", type=click.IntRange(min=0), default=1, show_default=True,
                     help="Random subnets per step beside the largest and the smallest."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--strategy", default="default", show_default=True,
                     help="tf.distribute strategy: default, mirrored, one-device or multi-worker "
                          "(from TF_CONFIG)."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="float32",
                     show_default=True, help="Keras mixed precision policy."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(options: dict):
    """TrainSettings from the `_train_options` in `options` (which it removes from there)."""
    names = ("epochs", "batch_size", "recipe", "lr", "warmup_epochs", "label_smoothing",
             "rand_augment", "mixup", "cutmix", "random_erasing", "drop_path", "random_subnets",
             "seed", "precision")
    given = {name: options.pop(name) for name in names}
    given["learning_rate"] = given.pop("lr")
    return recipe_settings(given.pop("recipe"), given.pop("batch_size"), **given)


@main.command()
@_train_options
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="TensorFlow Datasets data_dir holding the prepared tfds: data.")
@click.option("--init-from", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A timm DeiT/ViT state dict (.safetensors or .npz) to start the supernet from.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (checkpoints, history).")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last epoch.")
def train(space_name, data_spec, strategy, out, resume, data_dir, init_from, **options):
    """Train a weight-sharing supernet with the sandwich rule."""
    _train(out, space_name, data_spec, _settings(options), strategy, resume, data_dir, init_from)


def _evaluate(run_path, config_specs):
    from mcuformer_tf.nas.run_dir import RunDir

    run = RunDir(run_path)
    space = run.space()
    configs = [space.resolve_config(spec) for spec in config_specs]
    from mcuformer_tf.nas.data import load_data
    from mcuformer_tf.nas.evaluation import subnet_accuracy
    from mcuformer_tf.nas.training import load_supernet

    supernet = load_supernet(run)
    data = load_data(run.spec()["data"], max(space.image_size))
    results = []
    for spec, config in zip(config_specs, configs):
        acc = subnet_accuracy(supernet, config, data)
        click.echo(f"val accuracy {acc:.2%} ({data.val_count} images): {spec}: {config.describe()}")
        results.append(acc)
    return results


@main.command("eval")
@click.option("--supernet", "run_path", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="A training run directory.")
@click.option("--config", "config_specs", multiple=True, default=["largest"], show_default=True,
              help="A subnet config file (.json/.yaml), or largest / smallest. Repeatable.")
def evaluate(run_path, config_specs):
    """Extract subnets from a trained supernet and print their val accuracy."""
    _evaluate(run_path, config_specs)


def _int4_packed(model_bytes: bytes) -> bytes:
    """`export --weight-bits 4`'s last step: the model as the converter wrote it where every linear
    and patch-embedding filter is INT4 already (the file the memory model's flash fits count), else
    rewritten by the compiler's packer, which packs the rest or refuses a filter by name."""
    from mcuformer_tf.compiler import ir
    from mcuformer_tf.compiler.int4_weights import int4_filters, pack_int4_model

    if all(weights.int4 for _, weights in int4_filters(ir.read(model_bytes))):
        return model_bytes
    return pack_int4_model(model_bytes)


def _export(run_path, config_spec, qat_epochs, output, seed, weight_bits=None):
    from dataclasses import replace

    from mcuformer_tf.nas.run_dir import RunDir

    run = RunDir(run_path)
    space = run.space()
    config = space.resolve_config(config_spec)
    if weight_bits is not None:
        config = replace(config, weight_bits=weight_bits)
    weight_bits = config.weight_bits
    from mcuformer_tf.nas.data import load_data
    from mcuformer_tf.nas.training import load_supernet
    from mcuformer_tf.quantize.export import export_subnet
    from mcuformer_tf.quantize.qat_recipe import QatRecipe

    supernet = load_supernet(run)
    data = load_data(run.spec()["data"], max(space.image_size))
    click.echo(f"export {config.describe()}: {qat_epochs} QAT epochs, {weight_bits}-bit weights")
    result = export_subnet(supernet, config, data, output, QatRecipe(epochs=qat_epochs, weight_bits=weight_bits),
                           seed=seed, finish=_int4_packed if weight_bits == 4 else None)
    click.echo(f"QAT fine-tune: {result.fine_tune}")
    click.echo(result.summary())
    return result


@main.command("export")
@click.option("--supernet", "run_path", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="A training run directory.")
@click.option("--config", "config_spec", default="largest", show_default=True,
              help="A subnet config file (.json/.yaml), or largest / smallest.")
@click.option("--qat-epochs", type=click.IntRange(min=0), default=DEMO_QAT_EPOCHS,
              show_default=True,
              help="Quantisation-aware fine-tuning epochs (0: calibrate only).")
@click.option("--weight-bits", type=click.Choice(["8", "4"]), default=None,
              help="The linear and patch-embedding weights' grid (symmetric, narrow range); 4 stores them "
                   "as packed INT4 tensors, half the flash. Activations stay 8-bit.  [default: the "
                   "config's weight_bits (what tune chose), else 8]")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The int8 .tflite to write.")
@click.option("--seed", type=int, default=0, show_default=True)
def export(run_path, config_spec, qat_epochs, weight_bits, output, seed):
    """Extract a subnet, fine-tune it quantisation-aware and write an int8 .tflite for TFLM."""
    _export(run_path, config_spec, qat_epochs, output, seed, None if weight_bits is None else int(weight_bits))


WEIGHT_BITS_CHOICES = {"8": (8,), "4": (4,), "search": WEIGHT_BITS}


def _tune(run_path, target, sram, flash, memory_plan, out, settings, evolve_space=False, latency=None,
          clock=None, weight_bits=None):
    """Check the budget and the run, then search; returns the TuneResult."""
    from dataclasses import replace

    from mcuformer_tf.nas.run_dir import RunDir
    from tuner.budget import Budget, check_space_fits, parse_clock, parse_duration, resolve_target

    budget = Budget(resolve_target(target, sram, flash), memory_plan,
                    None if latency is None else parse_duration(latency),
                    None if clock is None else parse_clock(clock))
    run = RunDir(run_path)
    space = run.space() if weight_bits is None else replace(run.space(), weight_bits=WEIGHT_BITS_CHOICES[weight_bits])
    check_space_fits(space, budget)
    from tuner.search import format_table, role, tune

    try:
        result = tune(run, budget, out, settings, space=space, evolve_space=evolve_space, log=click.echo)
    except KeyboardInterrupt:
        click.echo(f"interrupted: the finished trials are kept in {out}; rerun the same command "
                   "to resume", err=True)
        raise SystemExit(130) from None
    if role().startswith("worker"):
        click.echo(f"{role()} ran {result.finished} trials ({result.eval_seconds:.1f} s scoring "
                   "subnets); the chief holds the results")
        return result
    click.echo(f"{result.finished} trials finished, {result.checked} candidates checked against "
               f"the budget, {result.rejected} rejected before a trial existed "
               f"({result.seconds:.1f} s, {result.eval_seconds:.1f} s scoring subnets)")
    if result.stop_reason:
        click.echo(result.stop_reason)
    if result.top:
        click.echo(format_table(result))
        click.echo(f"best subnet -> {result.best_file}")
    return result


@main.command("tune")
@click.option("--supernet", "run_path", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="A training run directory.")
@click.option("--target", default="stm32f746", show_default=True,
              help=f"Board profile: {', '.join(TARGETS)}, or custom (needs --sram and --flash).")
@click.option("--sram", default=None, help="SRAM budget, e.g. 320KiB (default: the target's).")
@click.option("--flash", default=None, help="Flash budget, e.g. 1MiB (default: the target's).")
@click.option("--latency", default=None,
              help="Latency budget of one inference, e.g. 800ms (the latency model's instructions at --clock).")
@click.option("--clock", default=None, help="Core clock for --latency, e.g. 216MHz (default: the target's).")
@click.option("--memory-plan", type=click.Choice(["fused", "unfused"]), default="fused",
              show_default=True,
              help="The arena the SRAM budget applies to: fused MCUF operators or stock TFLM.")
@click.option("--algorithm", type=click.Choice(["evolution", "random", "bayesian", "grid"]),
              default="evolution", show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=200, show_default=True,
              help="Subnets to score (a rerun resumes up to this total).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Search directory (KerasTuner project, best_config.json, results.json).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--population", type=click.IntRange(min=2), default=20, show_default=True,
              help="Evolution: random subnets before the first children.")
@click.option("--parents", type=click.IntRange(min=1), default=5, show_default=True,
              help="Evolution: the top-k trials that children come from.")
@click.option("--mutation-prob", type=click.FloatRange(0, 1), default=0.3, show_default=True)
@click.option("--crossover-prob", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Evolution: share of children made by crossover (the rest by mutation).")
@click.option("--fine-tune-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fine-tune each subnet this many steps before scoring (0: inherited "
                   "weights only).")
@click.option("--evolve-space", is_flag=True,
              help="First evolve the space over rank ratio and patch size (MCUFormer), then "
                   "search the evolved space.")
@click.option("--weight-bits", type=click.Choice(list(WEIGHT_BITS_CHOICES)), default=None,
              help="Weights of the subnets searched: int8, packed INT4 (half the flash a weight), or search "
                   "both (a hyperparameter; a subnet is scored on its float accuracy at either width).  "
                   "[default: the space's weight_bits, 8 unless its file says otherwise]")
def tune_command(run_path, target, sram, flash, latency, clock, memory_plan, algorithm, trials, out, seed,
                 population, parents, mutation_prob, crossover_prob, fine_tune_steps,
                 evolve_space, weight_bits):
    """Search a trained supernet for the most accurate subnets that fit a board's memory (and latency)."""
    settings = TuneSettings(algorithm=algorithm, trials=trials, seed=seed, population=population,
                            parents=parents, mutation_prob=mutation_prob,
                            crossover_prob=crossover_prob, fine_tune_steps=fine_tune_steps)
    if parents > population:
        raise McuformerError(f"--parents {parents} exceeds --population {population}")
    _tune(run_path, target, sram, flash, memory_plan, out, settings, evolve_space, latency, clock, weight_bits)


@main.command()
@_train_options
@click.option("--out", default=Path("runs/demo"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
def demo(space_name, data_spec, strategy, out, **options):
    """The whole chain on the built-in digits data (resumes a run already in --out).

    Train, evaluate the largest and smallest subnets, tune within DEMO_SRAM, export the tuned
    subnet, find its arena, report its memory and compile it."""
    from mcuformer_tf.nas.run_dir import RunDir

    click.echo(f"== train the supernet ({out})")
    settings = _settings(options)
    seed = settings.seed
    _train(out, space_name, data_spec, settings, strategy, resume=RunDir(out).exists())
    click.echo("== evaluate extracted subnets")
    _evaluate(out, ["largest", "smallest"])
    click.echo(f"== tune: the most accurate subnet within {DEMO_SRAM} of SRAM ({DEMO_TRIALS} "
               "trials, evolution)")
    tuned = _tune(out, "stm32f746", DEMO_SRAM, None, "fused", out / "tune",
                  TuneSettings(algorithm="evolution", trials=DEMO_TRIALS, seed=seed,
                               population=10, parents=3))
    click.echo("== export the tuned subnet: quantisation-aware fine-tuning, int8 .tflite")
    model = out / "model.tflite"
    _export(out, tuned.best_file, DEMO_QAT_EPOCHS, model, seed)
    context = click.get_current_context()
    click.echo("== the smallest TFLM arena that runs it")
    context.invoke(arena, model=model)
    click.echo("== memory report")
    context.invoke(report, model=model, png=out / "memory.png")
    click.echo("== compile: fused MCUF operators and an offline arena plan")
    fused = out / "fused.tflite"
    context.invoke(compile_command, model=model, output=fused)
    from mcuformer_tf.board.cortex_m7 import toolchain_missing
    from mcuformer_tf.board.deploy import m7_library_missing

    if m7_library_missing() is None:
        click.echo("== deploy: the fused model as full firmware on an emulated Cortex-M7 (STM32F746)")
        context.invoke(deploy_command, model=fused, output=out / "deploy")
        return
    click.echo("== the MCUF kernels on an emulated Cortex-M7 (STM32F746 sizes; full firmware: "
               f"{m7_library_missing()})")
    reason = toolchain_missing()
    if reason:
        click.echo(f"skipped: {reason}")
    else:
        context.invoke(kernel_test_command, model=model, build_dir=out / "kernel_test")


def _checked_graph(model, allow_mcuf=False):
    from mcuformer_tf.tflm.runtime import check_stock_model
    from mcuformer_tf.tflm.tflite_graph import read_model

    graph = read_model(model)
    check_stock_model(graph, allow_mcuf=allow_mcuf)
    return graph


def _values(array, limit=16) -> str:
    flat = array.reshape(-1)
    text = " ".join(str(int(v)) for v in flat[:limit])
    return text + (f" ... ({flat.size} values)" if flat.size > limit else "")


def _run_outputs(model, graph, inputs, arena_size):
    """(runtime name, outputs, LiteRT outputs or None): the TFLM wheel, or the host runner."""
    import numpy as np

    from mcuformer_tf.tflm.runtime import DEFAULT_ARENA, has_mcuf_ops, run_litert, run_tflm

    raw = Path(model).read_bytes()
    if not has_mcuf_ops(graph):
        return "TFLM", run_tflm(raw, inputs, arena_size), run_litert(raw, inputs)
    from mcuformer_tf.tflm.host_runner import host_runner_skip_reason, run_host

    reason = host_runner_skip_reason()
    if reason is not None:
        raise McuformerError(f"{model} has MCUF custom ops, which run only in the host runner: "
                             f"{reason}")
    if len(inputs) != 1:
        raise McuformerError(f"the host runner fills one input; {model} has {len(inputs)}")
    blobs, _ = run_host(model, inputs[0].tobytes(), arena_size or DEFAULT_ARENA)
    specs = [graph.tensors[i] for i in graph.outputs]
    return ("TFLM host runner",
            [np.frombuffer(b, t.dtype).reshape(t.shape) for b, t in zip(blobs, specs)], None)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "input_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The input as .npy or raw bytes (default: seeded random values).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--arena", "arena_size", type=click.IntRange(min=16), default=None,
              help="TFLM arena bytes  [default: 64 MiB]")
def run(model, input_file, seed, arena_size):
    """Run a .tflite in stock TFLM beside the TFLite reference; print both and their difference."""
    import numpy as np

    from mcuformer_tf.tflm.runtime import model_inputs

    graph = _checked_graph(model, allow_mcuf=True)
    inputs = model_inputs(graph, seed, input_file)
    runtime, outputs, reference = _run_outputs(model, graph, inputs, arena_size)
    source = str(input_file) if input_file else f"random, seed {seed}"
    for index, x in zip(graph.inputs, inputs):
        click.echo(f"input {graph.tensors[index].name}: {x.dtype} {list(x.shape)} ({source})")
    width = max(len(runtime), len("LiteRT"))
    for k, (index, out) in enumerate(zip(graph.outputs, outputs)):
        click.echo(f"output {graph.tensors[index].name}: {out.dtype} {list(out.shape)}")
        click.echo(f"  {runtime:<{width}}  {_values(out)}   top-1 {int(np.argmax(out))}")
        if reference is None:
            click.echo(f"  {'LiteRT':<{width}}  (no TFLite reference for MCUF custom ops)")
            continue
        ref = reference[k]
        diff = int(np.max(np.abs(out.astype(np.int64) - ref.astype(np.int64)), initial=0))
        click.echo(f"  {'LiteRT':<{width}}  {_values(ref)}   top-1 {int(np.argmax(ref))}")
        click.echo(f"  max difference {diff} LSB")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
def arena(model):
    """The smallest arena with which stock TFLM allocates and runs MODEL (found by trial)."""
    from mcuformer_tf.memory.arena_search import find_arena

    _checked_graph(model)
    size = find_arena(model)
    click.echo(f"arena {size.arena:,} bytes ({size.arena / 1024:.1f} KiB): persistent "
               f"{size.persistent:,} + non-persistent {size.non_persistent:,} "
               f"(TFLM reports {size.used:,} used)")
    click.echo(f"with {size.failing:,} bytes: {size.failure}  [{size.trials} trials]")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the arena plan over operator order into this PNG.")
@click.option("--compare", type=click.Path(dir_okay=False, path_type=Path),
              help="Another .tflite (the unfused model) whose plan goes beside MODEL's.")
def report(model, png, compare):
    """Memory report: the TFLM arena plan per operator, its peak, and flash by content.

    A compiled model's plan is its offline plan, which TFLM follows."""
    from mcuformer_tf.memory.report import format_comparison, format_report, memory_report, plot_arena

    _checked_graph(model, allow_mcuf=True)
    result = memory_report(model)
    others = []
    if compare:
        _checked_graph(compare, allow_mcuf=True)
        others.append(memory_report(compare))
    click.echo(format_report(result))
    for other in others:
        click.echo(format_comparison(result, other))
    estimate = _latency_estimate(model.read_bytes())
    if estimate:
        click.echo(f"latency model: {estimate}")
    if png:
        spans = None
        if others:
            from mcuformer_tf.compiler import ir
            from mcuformer_tf.compiler.unfuse import builtin_counts

            spans = [builtin_counts(ir.read(path.read_bytes())) for path in (model, compare)]
        plot_arena(result, png, *others, spans=spans)
        click.echo(f"arena plot -> {png}")


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The fused .tflite to write.")
def compile_command(model, output):
    """Fuse MODEL's ViT blocks into MCUF custom ops and plan its arena offline (TFLM metadata)."""
    from mcuformer_tf.compiler.pipeline import compile_model
    from mcuformer_tf.memory.report import memory_report
    from mcuformer_tf.tflm.runtime import has_mcuf_ops

    if has_mcuf_ops(_checked_graph(model, allow_mcuf=True)):
        raise McuformerError(f"{model} already holds MCUF operators: compile the unfused int8 "
                             "model that export writes")
    raw = model.read_bytes()
    compiled = compile_model(raw)
    output.write_bytes(compiled.model_bytes)
    fusion = compiled.fusion
    click.echo(f"fused {len(fusion.fused)} of {len(compiled.blocks)} blocks:")
    for block, code in fusion.fused:
        click.echo(f"  {block.kind:<12}{len(block.ops):>4} operators -> {code}")
    for block, reason in fusion.kept:
        click.echo(f"  {block.kind:<12}{len(block.ops):>4} operators stay builtin: {reason}")
    unfused, fused = memory_report(raw).peak, compiled.plan.size
    click.echo(f"arena (non-persistent): unfused {unfused:,} B (TFLM's own plan) -> fused "
               f"{fused:,} B (offline plan): {fused / unfused:.2f} of it, "
               f"{unfused / fused:.2f}x smaller")
    click.echo(f"flash (the .tflite): unfused {len(raw):,} B -> fused "
               f"{len(compiled.model_bytes):,} B")
    click.echo(f"-> {output}")


def _latency_estimate(model_bytes: bytes, target_name: str = "stm32f746", measured: int | None = None) -> str:
    """The latency model's instructions for the model's fused form, at the target's clock, and
    beside `measured` (a whole inference as firmware); "" when the model is not a ViT export."""
    from mcuformer_tf.board import latency, targets
    from mcuformer_tf.board.latency_shape import model_shape

    read = model_shape(model_bytes)
    if read is None:
        return ""
    estimate = latency.shape_instructions(*read)
    beside = f", {estimate / measured - 1:+.1%} against the {measured:,} measured" if measured else ""
    return (f"{estimate:,} instructions for one inference of the fused model (Cortex-M7, DSP loops"
            f"{beside}), {targets.target(target_name).time_estimate(estimate)}")


@main.command("kernel-test")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "target_name", type=click.Choice(list(TARGETS)),
              default="stm32f746", show_default=True,
              help="Board: its core (Cortex-M7 or M4) and linker profile (the disco profile puts the weights "
                   "in its external flash).")
@click.option("--portable", is_flag=True, help="Build the kernels' portable C loops, not the DSP ones.")
@click.option("--build-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("build/kernel_test"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input image.")
def kernel_test_command(model, target_name, portable, build_dir, seed):
    """Run every MCUF kernel of MODEL (unfused int8, int8 or INT4 weights) on the target's emulated core against
    the host build."""
    import numpy as np

    from mcuformer_tf.board import kernel_test, targets
    from mcuformer_tf.tflm.runtime import has_mcuf_ops

    graph = _checked_graph(model, allow_mcuf=True)
    if has_mcuf_ops(graph):
        raise McuformerError(f"{model} already holds MCUF operators: give the unfused int8 model, "
                             "whose blocks define the kernels and their inputs")
    image = np.random.default_rng(seed).integers(-128, 128, graph.tensor(graph.inputs[0]).shape, np.int8)
    cases = kernel_test.model_cases(model.read_bytes(), image)
    result = kernel_test.run(cases, build_dir, target_name, dsp=not portable)
    core = _core_label(targets.target(target_name))
    click.echo(f"{'case':<26}{'instructions':>14}{'MACs':>11}{'MAC/instr':>11}  {core} vs host")
    for case, ran in zip(cases, result.cases):
        same = ran.output == case.expected.tobytes()
        click.echo(f"{case.name:<26}{ran.instructions:>14,}{case.macs:>11,}"
                   f"{case.macs / max(ran.instructions, 1):>11.3f}  {'same bytes' if same else ran.status}")
    blocks = [(c, r) for c, r in zip(cases, result.cases) if c.kind in kernel_test.BUILDERS]
    instructions = sum(r.instructions for _, r in blocks)
    click.echo(f"fused kernels of one inference: {instructions:,} instructions "
               f"({'portable C' if portable else 'DSP'} loops, -icount shift=0), "
               f"{targets.target(target_name).time_estimate(instructions)}")
    click.echo("linked for " + target_name + ": " + ", ".join(
        f"{region} {used:,} B" for region, used in result.usage.items()))
    failed = [r.name for c, r in zip(cases, result.cases) if r.output != c.expected.tobytes()]
    if failed or result.exit_code != 0:
        raise McuformerError(f"the {core} differs from the host build on {', '.join(failed) or 'a case'} "
                             f"(firmware exit code {result.exit_code})")


def _core_label(target) -> str:
    """Cortex-M7, Cortex-M4: the target's core as the README writes it."""
    return "Cortex-M" + target.core.name.split("-m")[1]


def _short_hex(data: bytes, shown: int = 16) -> str:
    """Up to `shown` bytes as hex; a longer output ends in the count of bytes left out."""
    return data.hex() if len(data) <= shown else f"{data[:shown].hex()}… {len(data):,} bytes"


def _reference_outputs(model: Path, example):
    """(where from, output bytes) of the model on `example` on the host: the host runner's TFLM when
    it can be built, else the arena executor (fused) or the TFLM wheel (unfused)."""
    from mcuformer_tf.tflm.host_runner import host_runner_skip_reason, run_host
    from mcuformer_tf.tflm.runtime import DEFAULT_ARENA, has_mcuf_ops, run_tflm

    raw = model.read_bytes()
    if host_runner_skip_reason() is None:
        blobs, _ = run_host(model, example.tobytes(), DEFAULT_ARENA)
        return "the host runner's TFLM", blobs[0]
    if has_mcuf_ops(_checked_graph(model, allow_mcuf=True)):
        from mcuformer_tf.compiler.arena_executor import run_planned

        return "the arena executor", run_planned(raw, [example])[0].tobytes()
    return "the TFLM wheel", run_tflm(raw, example)[0].tobytes()


@main.command("deploy")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "target_name", type=click.Choice(list(TARGETS)),
              default="stm32f746", show_default=True,
              help="The board (README: targets); stm32f746-disco puts the flatbuffer in the board's 16 MiB "
                   "QSPI flash.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the generated project.")
@click.option("--arena", type=click.IntRange(min=16), default=None,
              help="Arena bytes (default: the smallest with which the host runner's TFLM runs the model).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the example input.")
def deploy_command(model, target_name, output, arena, seed):
    """Write a TFLM project for MODEL on a board; link and run it on the emulator given TFLM."""
    import numpy as np

    from mcuformer_tf.board import deploy

    plan = deploy.plan(model, target_name, arena)
    if plan.input.c_type != "int8_t":
        raise McuformerError(f"the example input is int8; {model} takes {plan.input.c_type}")
    example = np.random.default_rng(seed).integers(-128, 128, plan.input.shape, np.int8)
    deploy.write(plan, model, output, example)
    ops = [opcode for opcode, _ in plan.builtins] + plan.custom
    click.echo(f"{model.name} on {plan.target.name}: {len(ops)} operators ({', '.join(ops)})")
    click.echo(f"arena {plan.arena:,} B ({plan.arena_source}); SRAM {plan.ram:,} of {plan.target.sram:,} B "
               f"with {plan.target.runtime_sram:,} B of stated runtime overhead")
    where = f"external flash {plan.external_flash:,} of {plan.target.external_flash:,} B, " \
        if plan.target.external_flash else ""
    click.echo(f"flash: model {plan.model_bytes:,} B; {where}internal {plan.flash:,} of {plan.target.flash:,} B "
               f"with {plan.target.runtime_flash:,} B of stated code")
    click.echo(f"-> {output}/ ({', '.join(deploy.FILES)})")
    reason = deploy.library_missing(plan.target.core)
    if reason:
        click.echo(f"full firmware: skipped: {reason}")
        estimate = _latency_estimate(model.read_bytes(), plan.target.name)
        if estimate:
            click.echo(f"latency model: {estimate}")
        return
    firmware = deploy.build_and_run(output, plan.output.nbytes, target_name=plan.target.name)
    source, expected = _reference_outputs(model, example)
    click.echo("linked for " + plan.target.name + ": " + ", ".join(
        f"{region} {used:,} B" for region, used in firmware.usage.items()))
    if firmware.output != expected:
        differ = [i for i, (a, b) in enumerate(zip(firmware.output, expected)) if a != b]
        raise McuformerError(f"the emulated {_core_label(plan.target)}'s output bytes differ from {source}'s in "
                             f"{len(differ)} of {len(expected)} bytes (first at byte {differ[0]})")
    click.echo(f"one inference on the emulated {_core_label(plan.target)}: {firmware.instructions:,} instructions, "
               f"{plan.target.time_estimate(firmware.instructions)}; output bytes "
               f"equal to {source}'s ({_short_hex(firmware.output)})")
    estimate = _latency_estimate(model.read_bytes(), plan.target.name, firmware.instructions)
    if estimate:
        click.echo(f"latency model: {estimate}")
    if firmware.top1:
        _, index, value, score = firmware.top1.split()
        click.echo(f"top-1 on the firmware: class {index} (int8 {value}, score {score})")
