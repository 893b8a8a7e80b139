"""Package `trainer`: the console scripts `fmnist-train` (= `python -m trainer.task`) and `fmnist-predict`.

The same package is the Vertex AI Python package (`python -m build` -> dist/*.tar.gz, run by a prebuilt training
container as `python -m trainer.task`). Its pins come from the requirements files, which MANIFEST.in ships in the
source package, so that it installs from the sdist as from the repository.
"""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [line.split(" #")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


setup(
    name="fmnist-trainer",
    version="0.1.0",
    description="Fashion-MNIST batch training job for laptops, containers, Kubernetes and Vertex AI.",
    packages=find_packages(include=["trainer", "trainer.*"]),
    python_requires=">=3.10",
    install_requires=requirements("requirements.txt"),
    extras_require={"test": requirements("requirements-test.txt"), "report": requirements("requirements-report.txt")},
    entry_points={"console_scripts": ["fmnist-train=trainer.task:run", "fmnist-predict=trainer.commands.predict:run"]},
)
