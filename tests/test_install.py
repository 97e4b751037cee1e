"""What an installed keras_local carries: its version, its type hints, and the
recipes of zoo/ found by name from any working directory; and what it needs:
the extras of pyproject.toml, and a JAX-only install that trains without
TensorFlow or any other optional package."""

import os
import subprocess
import sys

import pytest

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
        recipes.experiment, "train", lambda settings, **_: _fake_result(settings.to_dict())
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


# ----------------------------------------------------------------------------------
# Extras: `pip install "keras-local[jax]"` trains without TensorFlow


def _pyproject():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _names(requirements):
    from packaging.requirements import Requirement

    return {Requirement(r).name.lower() for r in requirements}


# What a JAX-only install lacks: every optional package but the backend.
OPTIONAL_MODULES = (
    "tensorflow",
    "tensorflow_datasets",
    "keras_tuner",
    "sklearn",
    "matplotlib",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "tensorboard",
)


def test_base_dependencies_are_keras_and_numpy_only():
    project = _pyproject()["project"]
    assert _names(project["dependencies"]) == {"keras", "numpy"}
    for requirement in project["dependencies"]:
        assert "tensorflow" not in requirement and "jax" not in requirement


def test_extras_are_as_documented():
    from keras_local import optional

    extras = _pyproject()["project"]["optional-dependencies"]
    assert set(extras) == {"jax", "tf", "torch", "export", "tune", "analysis", "test", "all"}
    assert _names(extras["jax"]) == {"jax"}
    # `tensorflow`, not `tensorflow-cpu`: a GPU user's install must not get the
    # CPU build forced on it (scripts/setup.sh swaps it on CPU machines).
    assert _names(extras["tf"]) == {"tensorflow", "tensorflow-datasets", "importlib_resources"}
    assert _names(extras["torch"]) == {"torch"}
    assert _names(extras["export"]) == {"tf2onnx", "onnx", "onnxruntime"}
    assert _names(extras["tune"]) == {"keras-tuner", "six", "tensorboard"}
    assert _names(extras["analysis"]) == {"scikit-learn", "matplotlib"}
    assert {"pytest", "pytest-xdist", "ruff"} <= _names(extras["test"])
    every = [r for name, rs in extras.items() if name != "all" for r in rs]
    assert not any(r.startswith("tensorflow-cpu") for r in every)
    assert extras["all"] == ["keras-local[jax,tf,torch,export,tune,analysis]"]
    # keras_local.optional names the extra that really installs each package.
    for module, (package, extra) in optional.EXTRAS.items():
        assert package.lower() in _names(extras[extra]), (module, package, extra)
    for module in OPTIONAL_MODULES:
        assert module in optional.EXTRAS


def test_setup_script_installs_every_extra_the_tests_need():
    with open(os.path.join(ROOT, "scripts", "setup.sh"), encoding="utf-8") as f:
        script = f.read()
    # All extras but `tf`, which comes as tensorflow-cpu plus the rest of the
    # `tf` extra read from pyproject.toml on x86_64, and as the extra elsewhere.
    assert 'extras="jax,export,tune,analysis,test"' in script
    assert '--with-torch) extras="$extras,torch"' in script
    assert '["optional-dependencies"]["tf"]' in script and '"tensorflow-cpu"' in script
    assert 'extras="$extras,tf"' in script


def test_ruff_is_configured():
    config = _pyproject()["tool"]["ruff"]
    assert config["line-length"] == 100
    assert {"E", "F", "W", "I", "B", "UP"} <= set(config["lint"]["select"])


def test_require_names_the_extra():
    from keras_local import optional

    assert optional.require("json").dumps([]) == "[]"
    with pytest.raises(ImportError) as excinfo:
        optional.require("keras_local_no_such_module", extra="tune", feature="keras-local tune")
    assert isinstance(excinfo.value, optional.MissingOptionalDependency)
    assert str(excinfo.value) == (
        'keras-local tune needs keras_local_no_such_module: pip install "keras-local[tune]"'
    )
    assert excinfo.value.extra == "tune"
    assert not optional.available("keras_local_no_such_module")
    assert optional.available("json")


_JAX_ONLY_CHILD = r"""
import importlib.abc
import json
import sys

BLOCKED = set(sys.argv[1].split(","))


class JaxOnlyInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (not in a JAX-only install)", name=name)
        return None


sys.meta_path.insert(0, JaxOnlyInstall())

import keras_local  # first, with no backend configured: it chooses JAX

import keras
import numpy as np

from keras_local import optional

assert keras.backend.backend() == "jax", keras.backend.backend()
(x, y), (x_test, y_test) = keras_local.data.load("fashion_mnist", download=False)
x, y, x_test, y_test = x[:2048], y[:2048], x_test[:1000], y_test[:1000]
keras.utils.set_random_seed(0)
model = keras_local.zoo.mlp(layers=2, units=256, rule="predsim", input_shape=(28, 28, 1))
before = model.evaluate(x_test, y_test, batch_size=500, verbose=0, return_dict=True)
history = model.fit(x, y, epochs=2, batch_size=128, verbose=0)
after = model.evaluate(x_test, y_test, batch_size=500, verbose=0, return_dict=True)
try:
    optional.require("keras_tuner", feature="keras-local tune")
    missing = None
except ImportError as e:
    missing = str(e)
print(json.dumps({
    "before": before["output_loss"],
    "after": after["output_loss"],
    "accuracy": after["accuracy"],
    "losses": history.history["loss"],
    "imported": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED),
    "missing": missing,
}))
"""


def test_jax_only_install_trains(tmp_path):
    """keras_local imports and trains with only keras, jax and numpy: the
    optional packages cannot be imported in the child process."""
    import importlib.util
    import json

    from keras_local import data

    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed")
    if not any(
        data._has_all_files(d, data.FASHION_MNIST_FILES)
        for d in data._fashion_mnist_search_dirs(None)
    ):
        pytest.skip("the Fashion-MNIST files are not on this machine")
    # No backend configured (no KERAS_BACKEND, no keras.json): keras_local
    # chooses JAX where TensorFlow is missing, as after `pip install
    # "keras-local[jax]"`.
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", KERAS_HOME=str(tmp_path))
    env.pop("KERAS_BACKEND", None)
    child = subprocess.run(
        [sys.executable, "-c", _JAX_ONLY_CHILD, ",".join(OPTIONAL_MODULES)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    assert result["after"] < 0.75 * result["before"], result
    assert result["losses"][-1] < result["losses"][0], result
    assert result["accuracy"] > 0.6, result  # chance is 0.1
    assert result["missing"] == (
        'keras-local tune needs keras-tuner: pip install "keras-local[tune]"'
    )


def test_missing_optional_packages_name_their_extra(monkeypatch):
    """As in an install without the `analysis` and `tf` extras."""
    import numpy as np

    from keras_local import analysis
    from keras_local import data
    from keras_local import optional

    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` fails
    with pytest.raises(optional.MissingOptionalDependency, match=r"keras-local\[analysis\]"):
        analysis.tsne_embedding(np.zeros((5, 3)))

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(data.DatasetUnavailableError, match=r"keras-local\[tf\]"):
        data.load("kmnist", download=False)


def test_keras_sets_load_without_tensorflow_datasets(tmp_path, monkeypatch):
    """Without tensorflow-datasets (a JAX-only install) MNIST and CIFAR come
    from Keras' own download."""
    import numpy as np

    from keras_local import data

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(data, "_tfds_installed", lambda: False)
    calls = []

    def fake_keras(name):
        calls.append(name)
        x = np.zeros((4, 28, 28), np.uint8)
        return (x, np.ones(4, np.uint8)), (x, np.ones(4, np.uint8))

    monkeypatch.setattr(data, "_keras_download", fake_keras)
    (x, y), _ = data.load("mnist")
    assert calls == ["mnist"] and x.shape == (4, 28, 28, 1) and y.dtype == np.int32
    with pytest.raises(data.DatasetUnavailableError, match=r"download=False") as excinfo:
        data.load("mnist", download=False)
    assert 'pip install "keras-local[tf]"' in str(excinfo.value) and calls == ["mnist"]
