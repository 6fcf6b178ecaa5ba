"""The wheel carries `resources/` (the built-in model, configs, tokenizers, presets, sample data,
style) inside the package as `lora_studio/resources/`, where `core.paths.resources_dir` looks
first. A checkout (and an editable install) keeps reading `resources/` beside the package;
everything else about the package is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = Path(__file__).resolve().parent / "resources"


class BuildWithResources(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "lora_studio" / "resources"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(RESOURCES, target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildWithResources})
