"""The `mcuformer-tf` command line: one command per arrow of the chain (DESIGN.md §1).

Mistakes a user can fix end in one line on stderr and exit code 2, never a
traceback. TensorFlow is imported only by the commands that need it.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import click

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.search_space import PRESETS, SearchSpace


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
DATA_HELP = "Data: digits (built in), imagefolder:PATH (ImageNet layout), cifar10:PATH."


@click.group(cls=Commands)
@click.version_option(package_name="mcuformer-tf")
def main():
    """Put the most accurate vision transformer that fits on a Cortex-M7."""


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


def _train(out, space_name, data_spec, settings, strategy, resume):
    from mcuformer_tf.data import load_data
    from mcuformer_tf.run_dir import RunDir
    from mcuformer_tf.training import STRATEGIES, train_supernet

    if strategy not in STRATEGIES:
        raise McuformerError(f"unknown strategy {strategy!r} (use one of: {', '.join(STRATEGIES)})")
    run = RunDir(out)
    if resume and run.exists():
        spec = run.spec()
        space = SearchSpace.from_dict(spec["space"])
        for given, recorded, what in ((space_name, space.name, "space"),
                                      (data_spec, spec["data"], "data")):
            if given is not None and given != recorded:
                raise McuformerError(f"--{what} {given} differs from the run's {what} {recorded} "
                                     f"in {out}; drop --{what} to resume")
        data_spec = spec["data"]
    else:
        if run.exists():
            raise McuformerError(f"{out} already holds a training run; pass --resume to continue "
                                 "it or choose another --out")
        space = SearchSpace.load(space_name or "digits")
        data_spec = data_spec or "digits"
    data = load_data(data_spec, max(space.image_size))
    if not run.exists():
        run.create({"space": space.to_dict(), "data": data_spec,
                    "settings": {k: v for k, v in vars(settings).items() if k != "epochs"}})
    return train_supernet(space, data, run, settings, strategy, resume=resume)


def _train_options(func):
    options = [
        click.option("--space", "space_name", default=None, help=SPACE_HELP + "  [default: digits]"),
        click.option("--data", "data_spec", default=None, help=DATA_HELP + "  [default: digits]"),
        click.option("--epochs", type=click.IntRange(min=1), default=32, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True),
        click.option("--lr", type=float, default=2e-3, show_default=True,
                     help="Peak AdamW learning rate."),
        click.option("--random-subnets", type=click.IntRange(min=0), default=1, show_default=True,
                     help="Random subnets per step beside the largest and the smallest."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--strategy", default="default", show_default=True,
                     help="tf.distribute strategy: default, mirrored or one-device."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(epochs, batch_size, lr, random_subnets, seed):
    from mcuformer_tf.training import TrainSettings

    return TrainSettings(epochs=epochs, batch_size=batch_size, learning_rate=lr,
                         random_subnets=random_subnets, seed=seed)


@main.command()
@_train_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (checkpoints, history).")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last epoch.")
def train(space_name, data_spec, epochs, batch_size, lr, random_subnets, seed, strategy, out,
          resume):
    """Train a weight-sharing supernet with the sandwich rule."""
    _train(out, space_name, data_spec, _settings(epochs, batch_size, lr, random_subnets, seed),
           strategy, resume)


def _evaluate(run_path, config_specs):
    from mcuformer_tf.data import load_data
    from mcuformer_tf.evaluation import subnet_accuracy
    from mcuformer_tf.run_dir import RunDir
    from mcuformer_tf.training import load_supernet

    run = RunDir(run_path)
    space = run.space()
    configs = [space.resolve_config(spec) for spec in config_specs]
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


@main.command()
@_train_options
@click.option("--out", default=Path("runs/demo"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
def demo(space_name, data_spec, epochs, batch_size, lr, random_subnets, seed, strategy, out):
    """The whole chain on the built-in digits data (resumes a run already in --out)."""
    from mcuformer_tf.run_dir import RunDir

    click.echo(f"== train the supernet ({out})")
    _train(out, space_name, data_spec, _settings(epochs, batch_size, lr, random_subnets, seed),
           strategy, resume=RunDir(out).exists())
    click.echo("== evaluate extracted subnets")
    _evaluate(out, ["largest", "smallest"])
