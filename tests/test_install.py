"""What an installed keras_local carries: its version, its type hints, and the
recipes of zoo/ found by name from any working directory."""

import os
import subprocess
import sys

import keras_local
from keras_local import cli
from keras_local import recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_version_option_prints_the_package_version(capsys):
    try:
        cli.main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert out.strip() == f"keras-local {keras_local.__version__}"


def test_version_is_written_once():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        pyproject = f.read()
    assert 'dynamic = ["version"]' in pyproject
    assert 'attr = "keras_local.__version__"' in pyproject


def test_py_typed_is_in_the_package():
    package = os.path.dirname(keras_local.__file__)
    assert os.path.isfile(os.path.join(package, "py.typed"))
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        assert '"py.typed"' in f.read()


def test_recipe_found_by_name_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in (
        "fashion_mnist-mlp-predsim.toml",
        "fashion_mnist-mlp-predsim",
        "zoo/fashion_mnist-mlp-predsim.toml",
    ):
        recipe = recipes.Recipe.from_file(name)
        assert recipe.name == "fashion_mnist-mlp-predsim"
        assert recipe.rule == "predsim" and os.path.isabs(recipe.path)
    # A file in the working directory wins over a shipped recipe of that name.
    (tmp_path / "fashion_mnist-mlp-predsim.toml").write_text(
        'dataset = "fashion_mnist"\nmodel = "mlp"\nrule = "sim"\nepochs = 1\n'
    )
    assert recipes.Recipe.from_file("fashion_mnist-mlp-predsim.toml").rule == "sim"
    # Only bare names and zoo/ paths are looked up.
    assert recipes.find_recipe("elsewhere/fashion_mnist-mlp-predsim.toml") == (
        "elsewhere/fashion_mnist-mlp-predsim.toml"
    )


def test_run_finds_a_recipe_by_name_and_appends_results_here(tmp_path, monkeypatch):
    from tests.test_recipes import _fake_result

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        recipes.experiment, "train", lambda **arguments: _fake_result(arguments)
    )
    printed = []
    recipes.run_recipe(
        "fashion_mnist-mlp-predsim.toml", epochs=1, results="zoo/results.md",
        print_fn=printed.append,
    )
    assert printed[0].startswith("Using the recipe file ")
    assert (tmp_path / "zoo" / "results.md").is_file()
    assert printed[-1] == f"Appended the result to {tmp_path / 'zoo' / 'results.md'}."


def test_build_ships_py_typed_and_the_zoo_recipes(tmp_path):
    """The package as a wheel carries it: setup.py's build_py copies zoo/*.toml
    to keras_local/zoo_recipes/, next to py.typed."""
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    package = tmp_path / "keras_local"
    assert (package / "py.typed").is_file()
    shipped = sorted(p.name for p in (package / "zoo_recipes").glob("*.toml"))
    in_zoo = sorted(p for p in os.listdir(os.path.join(ROOT, "zoo")) if p.endswith(".toml"))
    assert shipped and shipped == in_zoo
    with open(os.path.join(ROOT, "MANIFEST.in"), encoding="utf-8") as f:
        assert "zoo/*.toml" in f.read()  # and in the source distribution
