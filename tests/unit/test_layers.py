"""The layers' boundary: importing a command or a setting loads no TensorFlow, so that a wrong command line fails
in a second with one line, before TensorFlow's start-up (trainer/commands/__init__.py)."""

import json
import subprocess
import sys

import pytest

from support.data import ROOT

IMPORTS_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import trainer.{package} as package
names = [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m in ("tensorflow", "tf_keras", "tensorflow_datasets") if m in sys.modules)
print(json.dumps({{"modules": names, "heavy": heavy}}))
"""


@pytest.mark.parametrize("package", ["commands", "config"])
def test_importing_every_module_of_the_package_loads_no_tensorflow(package):
    result = subprocess.run([sys.executable, "-c", IMPORTS_EVERY_MODULE.format(package=package)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(found["modules"]) >= 5, found  # every module, not an empty package
    assert found["heavy"] == [], f"importing trainer.{package} loaded {found['heavy']}"
