"""The Python package, as Vertex AI's prebuilt training containers install it (`pythonPackageSpec`).

- setup.py reads only files that MANIFEST.in puts in the source package, and declares the console scripts and
  the `test` and `report` extras.
- `python -m build` (sdist, then the wheel built from the unpacked sdist) of a copy of the repository; each of
  the two is installed with `pip install --no-deps` into a fresh venv of its own, which then gets the runtime
  (TensorFlow and the rest) from .venv through a .pth file added *after* the install: so the package that runs is
  the installed one, and it must carry every module of trainer/ by itself. There `python -m trainer.task` and the
  `fmnist-train` console script list the trainer's flags.

Offline: the build uses .venv's setuptools (`--no-isolation`) and the sdist installs with `--no-build-isolation`.
"""

import ast
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SKIP = {".git", ".venv", ".data", "out", "build", "dist", ".pytest_cache", "__pycache__"}
# Flags the trainer defines in trainer/config/flags.py; --helpshort/--helpfull must list them.
TRAINER_FLAGS = ("--model", "--recipe", "--output_dir", "--tfds_manual_dir")


def run(cmd, **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    return subprocess.run([str(c) for c in cmd], **kwargs)


def setup_py_reads():
    """The files setup.py opens with requirements("...")."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    return sorted({node.args[0].value for node in ast.walk(tree)
                   if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "requirements"})


def test_the_source_package_ships_every_file_setup_py_reads():
    read = setup_py_reads()
    assert {"requirements.txt", "requirements-test.txt", "requirements-report.txt"} <= set(read), read
    included = set()
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        words = line.split()
        if words and words[0] == "include":
            included.update(words[1:])
    assert set(read) <= included, f"MANIFEST.in must include {sorted(set(read) - included)}"
    text = (ROOT / "setup.py").read_text()
    for script in ("fmnist-train=trainer.task:run", "fmnist-predict=trainer.commands.predict:run"):
        assert script in text


def copy_of_the_repository(dest):
    """The working tree without venvs, data, outputs, build products and caches (uncommitted files included)."""
    def ignore(folder, names):
        return [n for n in names if n in SKIP or n.endswith(".egg-info")]
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel, source copy) from `python -m build` of a copy of the repository."""
    source = copy_of_the_repository(tmp_path_factory.mktemp("package") / "src")
    out = source.parent / "dist"
    result = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source], cwd=source)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(out.iterdir())
    return sdists[0], wheels[0], source


def source_modules(source):
    return sorted(str(p.relative_to(source)) for p in (source / "trainer").rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.e2e
def test_build_makes_an_sdist_and_a_wheel_that_carry_the_whole_package(dists):
    sdist, wheel, source = dists
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {name[len(top) + 1:] for name in tar.getnames()}
    for name in setup_py_reads() + ["setup.py", "MANIFEST.in"]:
        assert name in names, f"the sdist lacks {name}"
    assert not any(name.startswith(("tests/", "bench/", "docs/", "k8s/", "jobs/")) for name in names)
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(info).decode()
        entry_points = whl.read(info.replace("METADATA", "entry_points.txt")).decode()
    modules = source_modules(source)
    assert modules and set(modules) <= names, sorted(set(modules) - names)
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    tf_pin = re.search(r"^tensorflow==\S+$", (ROOT / "requirements.txt").read_text(), re.M).group(0)
    assert tf_pin in requires
    assert any(r.startswith("matplotlib==") and 'extra == "report"' in r for r in requires), requires
    assert any(r.startswith("pytest==") and 'extra == "test"' in r for r in requires), requires
    assert "fmnist-train = trainer.task:run" in entry_points
    assert "fmnist-predict = trainer.commands.predict:run" in entry_points


@pytest.fixture(scope="module", params=["wheel", "sdist"])
def installed(request, dists, tmp_path_factory):
    """A fresh venv with only the package (pip install --no-deps), then .venv's packages through a .pth file."""
    sdist, wheel, _ = dists
    venv = tmp_path_factory.mktemp(f"from-{request.param}") / "venv"
    result = run([sys.executable, "-m", "venv", venv])
    assert result.returncode == 0, result.stderr
    python = venv / "bin" / "python"
    package = wheel if request.param == "wheel" else sdist
    # Offline: the sdist is built with the venv's own setuptools (ensurepip's), not a downloaded one; setuptools
    # 65 needs the `wheel` package (and its `packaging`) for that, lent from .venv on PYTHONPATH for the install.
    lent = venv.parent / "build-backend"
    lent.mkdir()
    dotvenv = pathlib.Path(sysconfig.get_paths()["purelib"])
    for path in [dotvenv / name for name in ("wheel", "packaging")] + [
            *dotvenv.glob("wheel-*.dist-info"), *dotvenv.glob("packaging-*.dist-info")]:
        (lent / path.name).symlink_to(path)
    result = run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
                  package], cwd=venv.parent, env={**venv_env(), "PYTHONPATH": str(lent)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    site = pathlib.Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                        .stdout.strip())
    (site / "zz-fmnist-runtime-from-dotvenv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv, site


def venv_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TF_CONFIG", "AIP_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2")
    return env


@pytest.mark.e2e
def test_the_installed_package_runs_on_its_own_modules(installed, dists):
    venv, site = installed
    python = venv / "bin" / "python"
    cwd = venv.parent   # not the repository: nothing is imported from the source tree
    probe = ("import pathlib, trainer, trainer.task, trainer.training.train\n"
             "root = pathlib.Path(trainer.__file__).parent\n"
             "print(root)\n"
             "print('\\n'.join(sorted(str(p.relative_to(root.parent)) for p in root.rglob('*.py'))))\n")
    result = run([python, "-c", probe], cwd=cwd, env=venv_env())
    assert result.returncode == 0, result.stderr[-3000:]
    location, *files = result.stdout.splitlines()
    assert pathlib.Path(location).parent == site, f"trainer imported from {location}, not from the installed package"
    assert files == source_modules(dists[2])

    # `python -m trainer.task` (what Vertex AI runs) and the console script list the trainer's own flags.
    for command in ([python, "-m", "trainer.task"], [venv / "bin" / "fmnist-train"]):
        full = run([*command, "--helpfull"], cwd=cwd, env=venv_env())
        assert all(flag in full.stdout for flag in TRAINER_FLAGS), full.stdout[-2000:] + full.stderr[-2000:]
        for help_flag in ("--helpshort", "--help"):
            short = run([*command, help_flag], cwd=cwd, env=venv_env())
            assert short.returncode == 0, short.stdout[-2000:] + short.stderr[-2000:]
            assert all(flag in short.stdout for flag in TRAINER_FLAGS), short.stdout[-2000:]
    predict = run([venv / "bin" / "fmnist-predict", "--help"], cwd=cwd, env=venv_env())
    assert predict.returncode == 0 and "--model_dir" in predict.stdout, predict.stdout[-2000:] + predict.stderr[-2000:]

