"""Copies the recipes of zoo/ into the built package as keras_local/zoo_recipes/,
so that an installed wheel finds them by name (`keras_local.recipes.find_recipe`).
zoo/ stays their only copy in the repository; an editable install reads it
directly. Everything else is configured in pyproject.toml."""

import glob
import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithRecipes(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = os.path.join(self.build_lib, "keras_local", "zoo_recipes")
        self.mkpath(target)
        for recipe in sorted(glob.glob(os.path.join("zoo", "*.toml"))):
            self.copy_file(recipe, os.path.join(target, os.path.basename(recipe)))


setup(cmdclass={"build_py": BuildPyWithRecipes})
