"""keras_local.reproduce and `keras-local reproduce`: paper tables, their
recipes, the recorded results read back, and the table printed beside ours."""

import pathlib
import re

import pytest

from keras_local import cli
from keras_local import recipes
from keras_local import reproduce
from keras_local.cli.reproduce import README_MARKERS
from keras_local.recipes import RESULTS_COLUMNS

ROOT = pathlib.Path(__file__).resolve().parents[1]
README_START, README_END = README_MARKERS

NOKLAND = {
    "fashion_mnist-mlp-backprop": 8.37,
    "fashion_mnist-mlp-pred": 8.60,
    "fashion_mnist-mlp-sim": 9.70,
    "fashion_mnist-mlp-predsim": 8.54,
    "fashion_mnist-vgg8b-backprop": 4.53,
    "fashion_mnist-vgg8b-pred": 5.66,
    "fashion_mnist-vgg8b-sim": 5.12,
    "fashion_mnist-vgg8b-predsim": 4.65,
}
REC_LRA = {
    "fashion_mnist-lra_mlp-rec-lra": 11.87,
    "fashion_mnist-lra_mlp-rec-lra-relu": 14.13,
    "fashion_mnist-lra_mlp-rec-lra-elu": 13.17,
    "fashion_mnist-lra_mlp-rec-lra-sign": 14.88,
    "fashion_mnist-lra_mlp-backprop": 12.98,
    "fashion_mnist-lra_mlp-feedback-alignment": 12.89,
    "fashion_mnist-lra_mlp-direct-feedback-alignment": 13.09,
}


def _main(capsys, *argv):
    """Runs `main` in-process; returns (exit status, stdout, stderr)."""
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def _row(recipe, error, epochs="200/200", train=60000, note="", date="2026-12-01T00:00:00"):
    model = recipe.split("-")[1]
    rule = recipe.split("-", 2)[2]
    paper = NOKLAND.get(recipe)
    cells = [
        recipe, "fashion_mnist", model, rule, epochs, str(train), f"{error:.2f}",
        "-" if paper is None else f"{paper:.2f}",
        "-" if paper is None else f"{error - paper:+.2f}",
        "tensorflow", "AMD EPYC, 2 CPUs", date + "+00:00", "1m00s", note,
    ]  # fmt: skip
    assert len(cells) == len(RESULTS_COLUMNS)
    return cells


def _results(tmp_path):
    """A results file: the MLP predsim run full length with seeds 1-3 (one
    row recorded twice, one superseded), after short runs; a short-only MLP pred row; a
    full-epoch run evaluated on a test subset (not full length)."""
    path = tmp_path / "results.md"
    rows = [
        _row("fashion_mnist-mlp-predsim", 20.0, "1/200", 512, "short CPU run; seed 1"),
        _row("fashion_mnist-mlp-predsim", 14.49, "3/200", note="short CPU run; seed 1"),
        _row("fashion_mnist-mlp-predsim", 90.0, note="seed 1; superseded: the recipe's old optimizer"),
        _row("fashion_mnist-mlp-predsim", 8.50, note="seed 1", date="2026-12-01T01:00:00"),
        _row("fashion_mnist-mlp-predsim", 8.70, note="seed 2", date="2026-12-01T02:00:00"),
        _row("fashion_mnist-mlp-predsim", 8.70, note="seed 2", date="2026-12-01T02:00:00"),
        _row("fashion_mnist-mlp-predsim", 8.60, note="seed 3", date="2026-12-01T03:00:00"),
        _row("fashion_mnist-mlp-pred", 14.40, "3/200", note="short CPU run; seed 1"),
        _row(
            "fashion_mnist-mlp-sim",
            9.0,
            note="test error on the first 500 test examples; seed 1",
        ),
    ]
    for row in rows:
        recipes.append_result_row(path, row)
    return path


def test_results_are_read_back_and_summarised(tmp_path):
    records = reproduce.read_results(_results(tmp_path))
    assert len(records) == 9
    assert records[0].epochs == 1 and records[0].recipe_epochs == 200
    assert records[0].train_examples == 512 and records[0].seed == 1
    assert not records[0].full_length and records[3].full_length
    assert records[2].superseded and not records[3].superseded  # left out below
    assert records[8].test_examples == 500 and not records[8].full_length
    assert records[7].paper_test_error == 8.60

    predsim = recipes.Recipe.from_file("fashion_mnist-mlp-predsim")
    summary = reproduce.summarize(predsim, records)
    full = summary.full
    assert full.n == 3  # the row recorded twice counts once
    assert full.mean == pytest.approx(8.60)
    assert (full.low, full.high) == (8.50, 8.70)
    assert full.spread == pytest.approx(0.20)
    assert full.seeds == [1, 2, 3] and full.backends == "tensorflow"
    assert full.describe() == "8.60 (8.50-8.70, n=3)"
    # Short runs apart: the latest configuration (3 epochs), not the 1-epoch one.
    assert summary.short.n == 1 and summary.short.mean == 14.49
    assert summary.short.epochs == "3/200"
    assert summary.shown() is full and summary.shown(short_only=True) is summary.short
    asked = reproduce.ShortConfig(epochs=1, train_examples=512)
    assert reproduce.summarize(predsim, records, asked).short.mean == 20.0

    sim = reproduce.summarize(recipes.Recipe.from_file("fashion_mnist-mlp-sim"), records)
    assert sim.full is None and sim.short.n == 1
    assert reproduce.summarize(recipes.Recipe.from_file("fashion_mnist-vgg8b-sim"), records) == (
        reproduce.RecipeSummary(recipes.Recipe.from_file("fashion_mnist-vgg8b-sim"), None, None)
    )


def test_a_damaged_row_is_named(tmp_path):
    path = _results(tmp_path)
    path.write_text(path.read_text() + "| fashion_mnist-mlp-sim | oops |\n")
    last = len(path.read_text().splitlines())
    with pytest.raises(ValueError, match=rf"line {last}: 2 cells, expected 14"):
        reproduce.read_results(path)
    assert reproduce.read_results(tmp_path / "missing.md") == []


def test_tables_take_their_recipes_from_the_zoo():
    nokland = reproduce.get_table("nokland-table2")
    found = nokland.recipes()
    assert {r.name: r.paper_test_error for r in found} == NOKLAND
    # The paper's order: rows, then columns glob, pred, sim, predsim.
    assert [r.name for r in found[:4]] == list(NOKLAND)[:4]
    assert nokland.datasets() == ["fashion_mnist"]
    predsim = next(r for r in found if r.name == "fashion_mnist-mlp-predsim")
    assert (predsim.row, predsim.column, predsim.paper_test_error) == (
        "3x1024 MLP", "predsim", 8.54
    )  # fmt: skip

    rec_lra = reproduce.get_table("rec-lra-table1").recipes()
    assert [r.name for r in rec_lra] == list(REC_LRA)
    assert [r.paper_test_error for r in rec_lra] == list(REC_LRA.values())

    # Only recipes with a published number: not the rules beside Table 2,
    # nor the associated-learning recipes (the paper reports MNIST).
    names = {t.name for t in reproduce.tables()}
    assert {"nokland-table2", "rec-lra-table1"} <= names
    members = {r.name for t in reproduce.tables() for r in t.recipes()}
    assert "fashion_mnist-mlp-predsim-bpf" not in members
    assert not any("al_mlp" in name for name in members)
    with pytest.raises(ValueError, match="Unknown table 'nope'.*nokland-table2"):
        reproduce.get_table("nope")


def test_run_outputs_are_deterministic_per_recipe_seed_and_epochs(tmp_path):
    recipe = recipes.Recipe.from_file("fashion_mnist-mlp-predsim")
    full = recipe.settings_for(None, seed=2)
    assert reproduce.run_output(full) == full.default_output()  # as `keras-local run`
    assert "seed=2" in reproduce.run_output(full)
    short = recipe.settings_for(3, train_examples=256, test_examples=128, seed=2)
    path = reproduce.run_output(short, tmp_path)
    assert path == reproduce.run_output(short, tmp_path)
    assert path.startswith(str(tmp_path)) and path.endswith("-test_examples=128.keras")
    assert "epochs=3" in path and "train_examples=256" in path
    assert len({path, reproduce.run_output(full, tmp_path)}) == 2


def test_no_run_prints_the_papers_table_beside_ours(tmp_path, capsys):
    results = _results(tmp_path)
    status, out, err = _main(
        capsys, "reproduce", "nokland-table2", "--no-run", "--results", results, "--seeds", 1, 4
    )
    assert status == 0, err
    assert "Nøkland & Eidnes 2019, Table 2 (Fashion-MNIST)" in out
    line = next(line for line in out.splitlines() if line.startswith("3x1024 MLP | predsim"))
    assert re.search(r"8\.54 +\| 8\.60 \(8\.50-8\.70, n=3\) \| \+0\.06 \| 200/200", line)
    assert "full length (seeds 1, 2, 3); seed 4 not run" in line
    line = next(line for line in out.splitlines() if line.startswith("3x1024 MLP | pred "))
    assert "14.40 (n=1)" in line and "3/200" in line and "NOT a reproduction" in line
    line = next(line for line in out.splitlines() if line.startswith("VGG8B      | sim"))
    assert line.endswith("not run")
    assert "SHORT RUNS" not in out
    assert results.read_text().count("\n| fashion") == 9  # nothing ran

    status, out, _ = _main(capsys, "reproduce", "--markdown", "rec-lra-table1", "--results", results)
    assert status == 0
    assert out.splitlines()[0] == "| paper | row | rule | paper % | ours % | epochs | backend |"
    assert "| Ororbia et al. 2023, Table 1 (Fashion-MNIST) | rLRA, tanh | rec-lra | 11.87 |" in out
    assert out.count("not run") == 7


def test_bad_input_is_a_usage_error(capsys):
    status, _, err = _main(capsys, "reproduce", "nope")
    assert status == 2
    assert err.startswith("keras-local: error: Unknown table 'nope'. The tables: nokland-table2")
    assert "rec-lra-table1" in err
    status, _, err = _main(capsys, "reproduce")
    assert status == 2 and "Name a table to reproduce: nokland-table2" in err
    status, _, err = _main(capsys, "reproduce", "rec-lra-table1", "--only", "fashion_mnist-mlp-sim")
    assert status == 2 and "is not a recipe of rec-lra-table1" in err
    status, _, err = _main(capsys, "reproduce", "nokland-table2", "--dataset", "cifar10")
    assert status == 2 and "no recipes for cifar10; data sets with recipes: fashion_mnist" in err
    status, _, err = _main(capsys, "reproduce", "nokland-table2", "--epochs", 0)
    assert status == 2 and "--epochs must be positive" in err


def test_list_names_the_tables(capsys):
    status, out, _ = _main(capsys, "reproduce", "--list")
    assert status == 0
    assert "nokland-table2: Nøkland & Eidnes 2019, Table 2:" in out
    assert "--dataset fashion_mnist (the default): 8 recipes" in out
    assert "rec-lra-table1: Ororbia et al. 2023, Table 1:" in out


def test_a_short_run_is_recorded_and_labelled_not_a_reproduction(tmp_path, capsys):
    results, models = tmp_path / "results.md", tmp_path / "models"
    argv = [
        "reproduce", "rec-lra-table1", "--only", "fashion_mnist-lra_mlp-backprop",
        "--epochs", 1, "--train-examples", 256, "--test-examples", 128, "--seeds", 0,
        "--results", results, "--output-dir", models, "--quiet",
    ]  # fmt: skip
    status, out, err = _main(capsys, *argv)
    assert status == 0, err
    assert "0 of 1 runs recorded already" in out
    (record,) = reproduce.read_results(results)
    assert record.recipe == "fashion_mnist-lra_mlp-backprop"
    assert (record.epochs, record.recipe_epochs, record.train_examples) == (1, 100, 256)
    assert record.seed == 0 and not record.full_length and "short" in record.note
    assert "SHORT RUNS (1 of 100 epochs, 256 training examples" in out
    table = out[out.index("Ororbia et al. 2023, Table 1") :]
    assert re.search(r"\nBP +\| FMNIST test \| 12\.98 +\| \d+\.\d\d \(n=1\) \|", table)
    assert "1/100" in table and "short run: NOT a reproduction" in table
    assert "ours %: mean test error of these short runs" in table
    assert len(list(models.glob("*.keras"))) == 1

    # Run again: the run is recorded, nothing trains and no row is added.
    status, out, err = _main(capsys, *argv)
    assert status == 0, err
    assert "1 of 1 runs recorded already" in out
    assert len(reproduce.read_results(results)) == 1


def test_readme_results_table_is_generated_from_the_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if README_START not in readme or README_END not in readme:
        pytest.skip(f"README.md has no {README_START} ... {README_END} section yet")
    section = readme.split(README_START, 1)[1].split(README_END, 1)[0]
    expected = reproduce.markdown_table(results=ROOT / "zoo" / "results.md")
    assert section.strip() == expected.strip(), (
        "The README's results table is out of date; regenerate it with "
        "`keras-local reproduce --write-readme`."
    )


def test_write_readme_replaces_only_the_table(tmp_path, capsys):
    results = tmp_path / "results.md"
    results.write_text((ROOT / "zoo" / "results.md").read_text(encoding="utf-8"))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{README_START}\nold table\n{README_END}\n\nAfter.\n")
    status, out, err = _main(capsys, "reproduce", "--write-readme", str(readme), "--results", str(results))
    assert status == 0, err
    text = readme.read_text()
    assert text.startswith(f"# Title\n\n{README_START}\n| paper | row |")
    assert text.endswith(f"|\n{README_END}\n\nAfter.\n") and "old table" not in text
    section = text.split(README_START)[1].split(README_END)[0]
    assert section.strip() == reproduce.markdown_table(results=results).strip()

    readme.write_text("# No markers\n")
    status, out, err = _main(capsys, "reproduce", "--write-readme", str(readme), "--results", str(results))
    assert status == 2 and "has no lines <!-- results-table:start -->" in err
