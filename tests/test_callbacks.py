"""keras_local.callbacks: the per-block epoch report, from hand-written logs."""

import keras
import pytest

from keras_local.callbacks import BlockReport
from keras_local.callbacks import CompactProgbarLogger
from keras_local.callbacks import block_metrics
from keras_local.callbacks import format_block_table

# The epoch logs of a 2-block predsim model, as `fit` with validation data
# passes them (every value distinct, so a misplaced value is caught).
PREDSIM_LOGS = {
    "loss": 0.5536,
    "accuracy": 0.1875,
    "output_loss": 2.2750,
    "block1_pred_loss": 2.2634,
    "block1_sim_loss": 0.1618,
    "block1_pred_accuracy": 0.2266,
    "block2_pred_loss": 2.2704,
    "block2_sim_loss": 0.1545,
    "block2_pred_accuracy": 0.2188,
    "val_loss": 0.6112,
    "val_accuracy": 0.1406,
    "val_output_loss": 2.2906,
    "val_block1_pred_loss": 2.2037,
    "val_block1_sim_loss": 0.1653,
    "val_block1_pred_accuracy": 0.5469,
    "val_block2_pred_loss": 2.2698,
    "val_block2_sim_loss": 0.1856,
    "val_block2_pred_accuracy": 0.3125,
    "learning_rate": 1.25e-4,
}


def _report(logs, epoch=1, epochs=20, **kwargs):
    lines = []
    report = BlockReport(print_fn=lines.append, **kwargs)
    report.set_params({"epochs": epochs, "verbose": 1, "steps": 10})
    report.on_epoch_end(epoch, logs)
    return lines


def _table(lines):
    """`{row label: [cells of split 0, cells of split 1, ...]}` and the
    column titles of the first split, from the lines after the headline."""
    header = [part.strip() for part in lines[2].split("|")]
    assert header[0] == "layer"
    columns = header[1].replace("pred loss", "pred_loss").replace(
        "sim loss", "sim_loss"
    ).replace("output loss", "output_loss").split()
    rows = {}
    for line in lines[3:]:
        label, *splits = [part.strip() for part in line.split("|")]
        rows[label] = [dict(zip(columns, cells.split())) for cells in splits]
    return columns, rows


def test_block_metrics_groups_by_block_and_strips_prefix():
    assert block_metrics(PREDSIM_LOGS) == {
        1: {"pred_loss": 2.2634, "sim_loss": 0.1618, "pred_accuracy": 0.2266},
        2: {"pred_loss": 2.2704, "sim_loss": 0.1545, "pred_accuracy": 0.2188},
    }
    assert block_metrics(PREDSIM_LOGS, prefix="val_")[2] == {
        "pred_loss": 2.2698,
        "sim_loss": 0.1856,
        "pred_accuracy": 0.3125,
    }
    # Multi-digit block numbers sort numerically.
    assert list(block_metrics({"block10_sim_loss": 1, "block9_sim_loss": 2})) == [9, 10]


def test_report_puts_every_number_in_its_row_and_column():
    lines = _report(PREDSIM_LOGS)
    assert lines[0] == "Epoch 2/20 - learning rate 1.25e-04 - loss 0.5536 (test 0.6112)"
    assert lines[1].split("|")[1].strip() == "train"
    assert lines[1].split("|")[2].strip() == "test"
    columns, rows = _table(lines)
    assert columns == ["pred_loss", "sim_loss", "output_loss", "accuracy"]
    assert list(rows) == ["block1", "block2", "output"]
    train, test = rows["block1"]
    assert train == {
        "pred_loss": "2.2634",
        "sim_loss": "0.1618",
        "output_loss": "-",
        "accuracy": "22.66%",
    }
    assert test == {
        "pred_loss": "2.2037",
        "sim_loss": "0.1653",
        "output_loss": "-",
        "accuracy": "54.69%",
    }
    assert rows["block2"][1]["sim_loss"] == "0.1856"
    assert rows["block2"][0]["accuracy"] == "21.88%"
    train, test = rows["output"]
    assert train == {
        "pred_loss": "-",
        "sim_loss": "-",
        "output_loss": "2.2750",
        "accuracy": "18.75%",
    }
    assert test["output_loss"] == "2.2906"
    assert test["accuracy"] == "14.06%"


def test_report_without_validation_has_train_columns_only():
    logs = {k: v for k, v in PREDSIM_LOGS.items() if not k.startswith("val_")}
    lines = _report(logs)
    assert lines[0] == "Epoch 2/20 - learning rate 1.25e-04 - loss 0.5536"
    assert "test" not in "\n".join(lines)
    _, rows = _table(lines)
    assert len(rows["block1"]) == 1
    assert rows["block1"][0]["sim_loss"] == "0.1618"


def test_validation_name_labels_the_validation_columns():
    lines = _report(PREDSIM_LOGS, validation_name="validation")
    assert "(validation 0.6112)" in lines[0]
    assert lines[1].split("|")[2].strip() == "validation"


def test_rule_without_block_metrics_reports_the_output_layer():
    # Backprop: no local heads, only the output layer.
    lines = _report({"loss": 0.3, "accuracy": 0.9, "output_loss": 0.31})
    columns, rows = _table(lines)
    assert columns == ["output_loss", "accuracy"]
    assert rows == {"output": [{"output_loss": "0.3100", "accuracy": "90.00%"}]}


def test_blocks_without_classifier_show_a_dash_for_accuracy():
    # sim: a similarity loss per block, no local classifier.
    logs = {
        "loss": 0.3,
        "accuracy": 0.5,
        "output_loss": 1.2,
        "block1_sim_loss": 0.21,
        "block2_sim_loss": 0.12,
    }
    columns, rows = _table(_report(logs))
    assert columns == ["sim_loss", "output_loss", "accuracy"]
    assert rows["block2"] == [{"sim_loss": "0.1200", "output_loss": "-", "accuracy": "-"}]
    assert rows["output"] == [{"sim_loss": "-", "output_loss": "1.2000", "accuracy": "50.00%"}]


def test_format_block_table_of_evaluate_logs():
    test_logs = {
        k.removeprefix("val_"): v for k, v in PREDSIM_LOGS.items() if k.startswith("val_")
    }
    lines = format_block_table(test_logs, splits=(("test", ""),))
    assert lines[0].split("|")[1].strip() == "test"
    _, rows = _table(["headline", *lines])
    assert rows["block1"][0]["accuracy"] == "54.69%"
    assert format_block_table({}) == []


class _Untouchable:
    def __getattr__(self, name):
        raise AssertionError("BlockReport read the model although the logs sufficed")


def test_report_reads_the_logs_not_the_model():
    report = BlockReport(print_fn=lambda line: None)
    report.set_model(_Untouchable())
    report.set_params({"epochs": 3})
    report.on_epoch_end(0, PREDSIM_LOGS)
    # It is an epoch-end callback only: nothing runs per batch.
    for hook in ("on_train_batch_end", "on_train_batch_begin", "on_test_batch_end"):
        assert getattr(BlockReport, hook) is getattr(keras.callbacks.Callback, hook)


def test_learning_rate_falls_back_to_the_optimizer():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(3e-3), loss="mse")
    lines = []
    report = BlockReport(print_fn=lines.append)
    report.set_model(model)
    report.on_epoch_end(4, {"loss": 0.5, "accuracy": 0.25, "output_loss": 0.5})
    # No `epochs` in the params outside `fit`: the headline shows the epoch only.
    assert lines[0] == "Epoch 5 - learning rate 3.00e-03 - loss 0.5000"


@pytest.mark.parametrize("logs", [{}, None])
def test_empty_logs_print_a_headline_only(logs):
    lines = _report(logs)
    assert lines == ["Epoch 2/20"]


def test_compact_progbar_shows_overall_metrics_only(capsys):
    progbar = CompactProgbarLogger()
    progbar.set_params({"verbose": 1, "epochs": 1, "steps": 2})
    progbar.on_train_begin()
    progbar.on_epoch_begin(0)
    progbar.on_train_batch_end(0, {k: v for k, v in PREDSIM_LOGS.items() if "val_" not in k})
    progbar.on_epoch_end(0, PREDSIM_LOGS)
    out = capsys.readouterr().out
    assert "loss: 0.5536" in out and "accuracy: 0.1875" in out
    assert "val_loss: 0.6112" in out and "val_accuracy: 0.1406" in out
    assert "block1" not in out and "output_loss" not in out
