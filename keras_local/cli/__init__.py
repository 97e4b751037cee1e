"""The `keras-local` command.

    keras-local train --model vgg8b --rule predsim --dataset fashion_mnist --epochs 200
    keras-local run zoo/fashion_mnist-mlp-predsim.toml --epochs 2 --train-examples 2000
    keras-local reproduce nokland-table2
    keras-local list

Each sub-command is a module of this package with `add_parser(commands)` and
`run(args, print_fn)`. What the user asked for wrong (an unknown name, a
parameter the rule does not take, a bad number) is a `UsageError`, reported
as `keras-local: error: ...` with exit status 2 like argparse's own, without
a traceback; any other error is a bug and keeps its traceback.
"""

import argparse

from keras_local.cli import analyze
from keras_local.cli import early_exit
from keras_local.cli import export
from keras_local.cli import listing
from keras_local.cli import reproduce
from keras_local.cli import run
from keras_local.cli import train
from keras_local.cli import tune
from keras_local.cli.common import PROG
from keras_local.cli.common import UsageError
from keras_local.cli.common import usage_errors

__all__ = ["PROG", "UsageError", "build_parser", "main", "usage_errors"]

#: The sub-commands, in the order `keras-local --help` lists them.
COMMANDS = (train, run, reproduce, analyze, tune, export, early_exit, listing)


def build_parser():
    """The argument parser of `keras-local`."""
    from keras_local import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train deep networks with local learning rules (Keras 3).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(commands).set_defaults(command_module=command)
    return parser


def main(argv=None):
    """Runs `keras-local` with `argv` (default: the command line); returns
    the exit status."""
    from keras_local.callbacks import DivergenceError
    from keras_local.data import DatasetUnavailableError
    from keras_local.optional import MissingOptionalDependency
    from keras_local.run_settings import SettingsError

    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command_module
    try:
        command.run(args)
    except (UsageError, SettingsError) as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    except (DatasetUnavailableError, MissingOptionalDependency) as e:
        parser.exit(1, f"{PROG}: error: {e}\n")
    except DivergenceError as e:
        parser.exit(1, f"{PROG}: error: {e} Nothing was saved.\n")
    except KeyboardInterrupt:
        message = getattr(command, "INTERRUPTED", None)
        if message is None:
            raise
        parser.exit(130, f"\n{PROG}: interrupted. {message}\n")
    return 0
