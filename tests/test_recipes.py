"""keras_local.recipes and the recipe files in zoo/."""

import itertools
import pathlib

import pytest

from keras_local import experiment
from keras_local import recipes
from keras_local import rules
from keras_local.recipes import RESULTS_COLUMNS
from keras_local.recipes import Recipe

ZOO = pathlib.Path(__file__).resolve().parents[1] / "zoo"

# Nøkland & Eidnes (2019), Table 2 (Fashion-MNIST), test error %.
TABLE_2 = {
    ("mlp", "backprop"): 8.37,
    ("mlp", "pred"): 8.60,
    ("mlp", "sim"): 9.70,
    ("mlp", "predsim"): 8.54,
    ("vgg8b", "backprop"): 4.53,
    ("vgg8b", "pred"): 5.66,
    ("vgg8b", "sim"): 5.12,
    ("vgg8b", "predsim"): 4.65,
}


def _recipe_path(model, rule):
    return ZOO / f"fashion_mnist-{model}-{rule}.toml"


@pytest.mark.parametrize("model, rule", sorted(TABLE_2))
def test_fashion_mnist_recipes_have_the_papers_settings(model, rule):
    path = _recipe_path(model, rule)
    recipe = Recipe.from_file(path)
    assert recipe.name == path.stem
    assert (recipe.dataset, recipe.model, recipe.rule) == ("fashion_mnist", model, rule)
    assert recipe.epochs == 200
    assert recipe.milestones == [100, 150, 175, 188]
    assert recipe.batch_size == 128
    assert recipe.learning_rate == 5e-4
    # The authors' torch.optim.Adam and nn.BatchNorm updates.
    assert recipe.optimizer == "pytorch-adam" and recipe.pytorch_batch_norm is True
    assert recipe.weight_decay == 0 and recipe.momentum == 0
    assert recipe.dropout == (0.025 if model == "mlp" else 0.1)
    # Rule parameters are rule options.
    assert recipe.rule_options.get("beta") == (0.99 if rule == "predsim" else None)
    expected_dim = 1024 if model == "vgg8b" and rule in ("pred", "predsim") else None
    assert recipe.rule_options.get("dim_in_decoder") == expected_dim
    assert recipe.activation is None  # the rule's default
    assert recipe.augment is True and recipe.cutout is None
    assert recipe.paper_test_error == TABLE_2[model, rule]
    assert recipe.table.startswith("Table 2")
    assert recipe.column == ("glob" if rule == "backprop" else rule)
    # The rule takes every parameter the recipe sets.
    rules.get(rule, **recipe.rule_options)
    # The file says where its numbers come from.
    assert "Table 2" in path.read_text(encoding="utf-8").splitlines()[1]


#: Mostafa et al.'s rule, on Table 2's networks with their paper's training.
MOSTAFA = [
    "random-classifier",
    "random-classifier-scfb",
    "random-classifier-random",
    "random-classifier-tlc",
]

BESIDE_TABLE_2 = MOSTAFA + [
    "pred-bpf",
    "sim-bpf",
    "predsim-bpf",
    "feedback-alignment",
    "direct-feedback-alignment",
    "sign-symmetry",
    "sign-symmetry-brsf",
    "sign-symmetry-frsf",
    "kolen-pollack",
]


def test_zoo_holds_table_2_and_the_rules_beside_it():
    names = {path.stem for path in ZOO.glob("fashion_mnist-*.toml")}
    table_2 = {f"fashion_mnist-{m}-{r}" for m, r in TABLE_2}
    beside = {f"fashion_mnist-{m}-{r}" for m in ("mlp", "vgg8b") for r in BESIDE_TABLE_2}
    # Kao & Chen's MNIST networks (AL vs backprop) and the rec-LRA paper's
    # Table 1 rows.
    associated = {f"fashion_mnist-{m}-{r}" for m in ("al_mlp", "al_cnn") for r in ("associated", "backprop")}
    rec_lra = {
        f"fashion_mnist-lra_mlp-{r}"
        for r in (
            "rec-lra", "rec-lra-relu", "rec-lra-elu", "rec-lra-sign",
            "backprop", "feedback-alignment", "direct-feedback-alignment",
        )
    }
    assert names == table_2 | beside | associated | rec_lra


@pytest.mark.parametrize("name", BESIDE_TABLE_2)
@pytest.mark.parametrize("model", ["mlp", "vgg8b"])
def test_recipes_beside_table_2_share_its_settings(model, name):
    recipe = Recipe.from_file(ZOO / f"fashion_mnist-{model}-{name}.toml")
    backprop = Recipe.from_file(ZOO / f"fashion_mnist-{model}-backprop.toml")
    for key in ("dropout", "augment", "pytorch_batch_norm", "width", "cutout"):
        assert getattr(recipe, key) == getattr(backprop, key), key
    training = ("epochs", "milestones", "decay_factor", "batch_size", "learning_rate")
    training += ("optimizer", "momentum", "nesterov", "weight_decay")
    if name in MOSTAFA:
        # Section 5 of Mostafa et al. (2018): SGD, Nesterov momentum 0.9, lr
        # 0.1 divided by 5 every 25 of 100 epochs.
        expected = (100, [25, 50, 75], 0.2, 100, 0.1, "pytorch-sgd", 0.9, True, 0.0)
        assert tuple(getattr(recipe, key) for key in training) == expected
    else:
        for key in training:
            assert getattr(recipe, key) == getattr(backprop, key), key
    assert recipe.paper_test_error is None
    # The rule and its options build.
    rule = rules.get(recipe.rule, **recipe.rule_options)
    assert recipe.rule_label().startswith(rule.name)


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        'dataset = "fashion_mnist"\nmodel = "mlp"\nrule = "sim"\nepochs = 2\n'
        "learning_rte = 1e-3\nbta = 0.5\n"
    )
    message = r"Unknown recipe keys bta, learning_rte in .*bad\.toml"
    with pytest.raises(ValueError, match=message) as info:
        Recipe.from_file(path)
    assert "learning_rate" in str(info.value)  # the valid keys are listed


def test_missing_key_and_bad_toml(tmp_path):
    path = tmp_path / "short.toml"
    path.write_text('dataset = "fashion_mnist"\nmodel = "mlp"\n')
    with pytest.raises(ValueError, match="lacks the required keys rule, epochs"):
        Recipe.from_file(path)
    path.write_text("model = mlp\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        Recipe.from_file(path)
    with pytest.raises(ValueError, match="No recipe file"):
        Recipe.from_file(tmp_path / "missing.toml")


def test_milestones_scale_with_the_epochs():
    recipe = Recipe.from_file(_recipe_path("mlp", "predsim"))
    assert recipe.milestones_for(200) == [100, 150, 175, 188]
    assert recipe.milestones_for(100) == [50, 75, 88, 94]
    assert recipe.milestones_for(400) == [200, 300, 350, 376]
    assert recipe.milestones_for(2) == [1, 2]
    assert recipe.milestones_for(1) == [1]


_FAKE_SECONDS = itertools.count()


def _fake_result(arguments, test_error=12.5):
    train_examples = arguments.get("train_examples")
    test_examples = arguments.get("test_examples")
    return experiment.ExperimentResult(
        test_error=test_error,
        test_accuracy=1 - test_error / 100,
        test_metrics={},
        train_metrics=None,
        block_metrics={},
        history={},
        epochs=arguments["epochs"],
        num_train_examples=train_examples or 60000,
        num_test_examples=test_examples or 10000,
        wall_time_s=65.0,
        output="unused.keras",
        summary="unused.keras.json",
        backend="tensorflow",
        # Each fake run finishes at its own time, as real runs do (a row of
        # the same recipe and time is the same run recorded already).
        date=f"2025-01-01T00:00:{next(_FAKE_SECONDS) % 60:02d}+00:00",
        parameters=dict(arguments),
    )


def _rows(results):
    lines = results.read_text(encoding="utf-8").splitlines()
    table = [line for line in lines if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table]


def test_run_recipe_appends_one_row_per_run(tmp_path, monkeypatch):
    calls = []

    def fake_train(settings, **arguments):
        calls.append(settings.to_dict())
        return _fake_result(calls[-1])

    monkeypatch.setattr(recipes.experiment, "train", fake_train)
    results = tmp_path / "results" / "results.md"
    path = _recipe_path("mlp", "predsim")

    printed = []
    recipes.run_recipe(
        path, epochs=4, train_examples=1000, results=results, print_fn=printed.append
    )
    assert printed[0].startswith("Recipe fashion_mnist-mlp-predsim: Table 2")
    assert "milestones scaled from 100, 150, 175, 188 to 2, 3, 4" in printed[1]
    assert "the paper reports 8.54% (+3.96 points)" in printed[2]
    assert printed[3] == f"Appended the result to {results}."
    assert calls[0]["epochs"] == 4
    assert calls[0]["milestones"] == [2, 3, 4]  # 100, 150, 175, 188 of 200, scaled
    assert calls[0]["train_examples"] == 1000
    assert calls[0]["rule_options"]["beta"] == 0.99 and calls[0]["dropout"] == 0.025

    recipes.run_recipe(path, results=results, verbose=0)  # the full recipe
    assert calls[1]["epochs"] == 200
    assert calls[1]["milestones"] == [100, 150, 175, 188]

    text = results.read_text(encoding="utf-8")
    assert text.startswith("# Recipe results")
    assert text.count("| recipe |") == 1  # header once
    header, rule, short, full = _rows(results)
    assert header == list(RESULTS_COLUMNS)
    assert set(rule) == {"---"}
    assert len(short) == len(full) == len(RESULTS_COLUMNS)
    cells = dict(zip(header, short))
    assert cells["recipe"] == "fashion_mnist-mlp-predsim"
    assert cells["epochs (run/recipe)"] == "4/200"
    assert cells["train examples"] == "1000"
    assert cells["test error %"] == "12.50"
    assert cells["paper %"] == "8.54"
    assert cells["diff (points)"] == "+3.96"
    assert cells["wall time"] == "1m05s"
    assert "short CPU run" in cells["note"] or "short GPU run" in cells["note"]
    assert "milestones scaled to 2, 3, 4" in cells["note"]
    cells = dict(zip(header, full))
    assert cells["epochs (run/recipe)"] == "200/200"
    assert cells["train examples"] == "60000"
    assert cells["note"] == ""


def test_results_row_is_appended_after_a_file_without_final_newline(tmp_path):
    results = tmp_path / "results.md"
    recipe = Recipe.from_file(_recipe_path("vgg8b", "sim"))
    row = recipes.result_row(recipe, _fake_result({"epochs": 200}, test_error=5.0))
    recipes.append_result_row(results, row)
    results.write_text(results.read_text().rstrip("\n"))
    recipes.append_result_row(results, row)
    rows = _rows(results)
    assert len(rows) == 4 and rows[2] == rows[3]
    assert dict(zip(rows[0], rows[2]))["diff (points)"] == "-0.12"
    with pytest.raises(ValueError, match="cells"):
        recipes.append_result_row(results, row[:-1])


def test_run_recipe_trains_and_records_a_real_short_run(tmp_path):
    results = tmp_path / "results.md"
    result = recipes.run_recipe(
        _recipe_path("mlp", "sim"),
        epochs=1,
        train_examples=256,
        test_examples=128,
        results=results,
        output=tmp_path / "model.keras",
        seed=0,
        verbose=0,
    )
    assert result.epochs == 1 and result.num_train_examples == 256
    assert result.parameters["dropout"] == 0.025
    assert result.parameters["milestones"] == [1]
    assert (tmp_path / "model.keras").exists()
    header, _, row = _rows(results)
    cells = dict(zip(header, row))
    assert cells["recipe"] == "fashion_mnist-mlp-sim"
    assert cells["epochs (run/recipe)"] == "1/200"
    assert cells["train examples"] == "256"
    assert float(cells["test error %"]) == pytest.approx(result.test_error, abs=0.005)
    assert cells["paper %"] == "9.70"
    assert float(cells["diff (points)"]) == pytest.approx(result.test_error - 9.70, abs=0.01)
    assert cells["backend"] == result.backend
    assert "CPUs" in cells["machine"]
    assert cells["date (UTC)"].endswith("+00:00")
    assert "short" in cells["note"] and "first 128 test examples" in cells["note"]

    # The same command again: the model is trained already, and its row is
    # not appended a second time (it would count as a second seed).
    printed = []
    again = recipes.run_recipe(
        _recipe_path("mlp", "sim"), epochs=1, train_examples=256, test_examples=128,
        results=results, output=tmp_path / "model.keras", seed=0, print_fn=printed.append,
    )  # fmt: skip
    assert again.date == result.date
    assert len(_rows(results)) == 3
    assert any("already trained with these settings" in line for line in printed)
    assert printed[-1] == f"{results} already has this run's row; nothing appended."


@pytest.mark.parametrize(
    "line, message",
    [
        ('augment = "no"', "augment must be true or false, got 'no'"),
        ('epochs = "two"', "epochs must be a positive integer, got 'two'"),
        ("dropout = 1.5", r"dropout must be a rate in \[0, 1\)"),
        ('learning_rate = "5e-4"', "learning_rate must be a positive number"),
        ("cutout = -2", "cutout must be a positive integer"),
        ("model = 3", "model must be a name"),
        ('paper_test_error = "8.5"', "paper_test_error must be a number"),
        ('rule_options = "beta=0.9"', "rule_options must be a table"),
    ],
)
def test_recipe_values_are_checked_by_type_when_read(tmp_path, line, message):
    """A wrong type is named when the recipe is read, before any training
    (`augment = "no"` used to read as true)."""
    text = _recipe_path("mlp", "predsim").read_text(encoding="utf-8")
    key = line.split(" = ")[0]
    lines = [t for t in text.splitlines() if not t.startswith(f"{key} =")]
    path = tmp_path / "bad.toml"
    path.write_text("\n".join([line, *lines]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        Recipe.from_file(path)
