"""Arguments and helpers several sub-commands share."""

import contextlib
import json
import os
import sys

PROG = "keras-local"


class UsageError(ValueError):
    """A command-line argument or setting that cannot be used.

    Library code raises `keras_local.run_settings.SettingsError` for a run
    setting it cannot use; `main` reports both the same way."""


@contextlib.contextmanager
def usage_errors():
    """Turns the `ValueError`s that checking the user's settings raises
    into `UsageError`s; wrap only the checking, never the work."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as e:
        raise UsageError(str(e)) from e


def fail(message, status=1):
    """Exits with `keras-local: error: <message>` on stderr."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def first_paragraph(text):
    """The first paragraph of a docstring, on one line."""
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def add_run_arguments(parser):
    """`--output`, `--seed` and `--quiet` of the commands that train a run."""
    add_output_argument(parser)
    parser.add_argument("--seed", type=int, help="random seed (default: not seeded)")
    add_quiet_argument(parser)


def add_output_argument(parser):
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="where to save the model, a path ending in .keras; a JSON summary goes "
        "to PATH.json (default: saved_models/<model>-<rule>-<dataset>.keras). An "
        "interrupted run resumes when run again with the same settings and output",
    )


def add_quiet_argument(parser):
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="one line per epoch instead of a progress bar (for logs)",
    )


def add_subset_arguments(parser, train=True):
    """`--train-examples` and `--test-examples`."""
    if train:
        parser.add_argument(
            "--train-examples",
            type=int,
            metavar="N",
            help="train on the first N training examples only (quick runs); default: all",
        )
    parser.add_argument(
        "--test-examples",
        type=int,
        metavar="N",
        help="evaluate on the first N test examples only; default: all",
    )


def add_saved_model_arguments(parser):
    """`MODEL` and `--dataset` of the commands that read a saved model."""
    from keras_local import data

    parser.add_argument("model", metavar="MODEL", help="a saved model, a .keras file")
    parser.add_argument(
        "--dataset",
        choices=data.DATASETS,
        help="default: the data set in MODEL.json, the summary `train` writes",
    )


def dataset_of_saved_model(args):
    """`--dataset`, or else the data set a `train` run recorded in
    `MODEL.json`; `ValueError` when neither says."""
    if args.dataset:
        return args.dataset
    summary = f"{args.model}.json"
    dataset = None
    if os.path.exists(summary):
        with open(summary) as f:
            dataset = json.load(f).get("parameters", {}).get("dataset")
    if dataset is None:
        raise ValueError(f"Which data set? {args.model}.json does not say; pass --dataset.")
    return dataset


def check_positive(args, *names):
    """`ValueError` naming the first of the options `names` given as < 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive.")
