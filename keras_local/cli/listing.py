"""`keras-local list`: the models, rules and data sets."""

from keras_local.cli.common import first_paragraph

NAME = "list"


def add_parser(commands):
    return commands.add_parser(
        NAME,
        help="list the models, rules and data sets",
        description="List the models, the rules with their parameters, and the data sets.",
    )


def run(args, print_fn=print):
    list_components(print_fn)


def list_components(print_fn=print):
    """Prints the models, rules (with parameters and defaults) and data sets."""
    from keras_local import data
    from keras_local import rules
    from keras_local import zoo

    width = max(map(len, [*zoo.names(), *rules.names()]))
    print_fn("Models:")
    for name in zoo.names():
        print_fn(f"  {name:{width}s} {first_paragraph(zoo.get(name).__doc__)}")
    print_fn("")
    print_fn("Rules (parameters with their defaults):")
    for name in rules.names():
        rule = rules.get(name)
        parameters = rules.parameters(name)
        settings = ", ".join(f"{k}={v!r}" for k, v in parameters.items()) or "no parameters"
        print_fn(f"  {name:{width}s} {settings}; activation {rule.default_activation}")
        print_fn(f"  {'':{width}s} {first_paragraph(type(rule).__doc__)}")
    print_fn("")
    print_fn("Data sets:")
    for name in data.DATASETS:
        info = data.info(name)
        shape = "x".join(map(str, info.input_shape))
        print_fn(f"  {name:14s} {info.num_classes} classes, images {shape}")


