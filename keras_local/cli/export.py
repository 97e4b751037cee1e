"""`keras-local export`: a saved model as a SavedModel (with early exit) or ONNX."""

from keras_local.cli.common import fail

NAME = "export"


def add_parser(commands):
    parser = commands.add_parser(
        NAME,
        help="export a saved model as a SavedModel (with an early-exit signature) or ONNX",
        description="Export a saved model (.keras) for serving. SavedModel: signatures "
        "'serving_default' (input 'inputs'; output 'probabilities', the full network's "
        "softmax) and 'early_exit' (inputs 'inputs' and 'threshold'; outputs "
        "'probabilities', 'exit_index' (0-based over the exits, the last being the full "
        "network) and 'blocks_run'), dynamic batch size, loadable with "
        "tf.saved_model.load without keras_local. ONNX: the full network ('inputs' -> "
        "'probabilities'). Runs on the TensorFlow backend; from another backend (a model "
        "trained on JAX) it switches to TensorFlow in a child process.",
    )
    parser.add_argument("model", metavar="MODEL", help="a saved model, a .keras file")
    parser.add_argument(
        "--format",
        choices=("saved_model", "onnx", "all"),
        default="saved_model",
        help="default: saved_model",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="destination (default: saved_models/NAME/ for a SavedModel, "
        "saved_models/NAME.onnx for ONNX, NAME being MODEL's file name without .keras); "
        "with --format all, the SavedModel's, the ONNX file going to PATH.onnx",
    )
    parser.add_argument(
        "--criterion",
        choices=("max_probability", "entropy"),
        default="max_probability",
        help="confidence of the early_exit signature: the largest probability, or "
        "1 - entropy / log(classes) (default: max_probability)",
    )
    parser.add_argument("--opset", type=int, help="ONNX opset (default: tf2onnx's)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing destination (else an existing file or non-empty "
        "directory is refused); the source model is never replaced",
    )
    return parser


def run(args, print_fn=print):
    from keras_local import export

    formats = ("saved_model", "onnx") if args.format == "all" else (args.format,)
    written = []
    for format in formats:
        path = args.output
        if path is not None and format == "onnx" and args.format == "all":
            path = f"{path.rstrip('/')}.onnx"
        try:
            written.append(
                export.export_file(
                    args.model,
                    path,
                    format=format,
                    criterion=args.criterion,
                    opset=args.opset,
                    overwrite=args.overwrite,
                )
            )
        except (RuntimeError, ImportError) as e:
            fail(f"{format} export failed: {e}")
        print_fn(f"{format} written to {written[-1]}")
    return written
