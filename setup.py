"""Package `trainer` with its console script `fmnist-train` (the same as `python -m trainer.task`)."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="fmnist-trainer",
    version="0.1.0",
    description="Fashion-MNIST batch training job for laptops, containers, Kubernetes and Vertex AI.",
    packages=find_packages(include=["trainer", "trainer.*"]),
    python_requires=">=3.10",
    install_requires=requirements("requirements.txt"),
    extras_require={"test": requirements("requirements-test.txt")},
    entry_points={"console_scripts": ["fmnist-train=trainer.task:run"]},
)
