"""What a benchmark ran on, recorded beside its results (shared by the
benchmark scripts in this folder, which run with it on their path)."""

import datetime
import json
import os
import platform


def describe(info):
    """`machine()`'s record as one line for a results file."""
    return f"{info['date']}; {info['cpu']} ({info['cpu_count']} cores); " + ", ".join(
        f"{name} {info[name]}" for name in ("keras", "tensorflow", "jax") if name in info
    )


def save_record(stem, command, info, date, args, rows):
    """Writes `<stem>.json`: the command, `machine()`'s record, the date, the
    script's settings (`args`, an argparse namespace) and its rows."""
    record = {"command": command, "machine": info, "date": date, "settings": vars(args),
              "rows": rows}  # fmt: skip
    with open(stem + ".json", "w") as f:
        json.dump(record, f, indent=1)


def machine():
    """Backend, library versions, CPU, device and the UTC date."""
    import keras

    info = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if info["backend"] == "jax":
        import jax

        info["jax"] = jax.__version__
        info["device"] = str(jax.devices()[0].device_kind)
    else:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["device"] = "CPU"
    return info


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
