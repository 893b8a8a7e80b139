"""What the launcher tests share (tests/test_launchers.py, tests/test_serving_launch.py): the checkers' venvs, a
subprocess runner, a finder for rendered documents, and a stand-in command-line client.

checkov, kubectl and shellcheck live in their own venv (requirements-lint.txt; checkov's pins clash with the
trainer's): build/lint-venv, or $FMNIST_LINT_VENV. kubernetes-validate is in the trainer's venv.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINT_VENV = pathlib.Path(os.environ.get("FMNIST_LINT_VENV") or ROOT / "build" / "lint-venv")
MAIN_BIN = pathlib.Path(sys.executable).parent
# Kubernetes versions the manifests must be valid for: an old supported one and the newest schema we have.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
QUIET_CHECKOV = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}


def lint_tool(name):
    path = LINT_VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: create the lint venv with `make lint-venv` "
                    f"(python3 -m venv {LINT_VENV} && {LINT_VENV}/bin/pip install -r requirements-lint.txt "
                    "-c constraints-lint.txt)")
    return str(path)


def run(cmd, **kwargs):
    kwargs.setdefault("cwd", ROOT)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 120)
    return subprocess.run([str(c) for c in cmd], **kwargs)


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def fake_client(folder, name):
    """A stand-in `docker`/`gcloud`/`curl` that records its arguments, keeps a copy of a --config file (as
    <name>.config) and of a request body (--data-binary @FILE or --json-request=FILE, as <name>.body), and answers
    `auth print-access-token`."""
    folder.mkdir(exist_ok=True)
    log = folder / f"{name}.args"
    script = folder / name
    script.write_text(f"""#!/bin/sh
: > '{log}'
for a in "$@"; do
  printf '%s\\n' "$a" >> '{log}'
  case "$a" in
    --config=*) cp "${{a#--config=}}" '{folder}/{name}.config' ;;
    @*) cp "${{a#@}}" '{folder}/{name}.body' ;;
    --json-request=*) cp "${{a#--json-request=}}" '{folder}/{name}.body' ;;
  esac
done
[ "$1 $2" = "auth print-access-token" ] && echo token-123
exit 0
""")
    script.chmod(0o755)
    return script, log


PARSE_FLAGS = r"""
import importlib, json, sys
from absl import flags
flag_values = importlib.import_module(sys.argv[2]).COMMAND.flag_values  # the command's flags (trainer.cli)
results = []
for args in json.load(sys.stdin):
    try:
        flag_values([sys.argv[1], *args])
        results.append("ok")
    except flags.Error as error:
        results.append(str(error))
    flag_values.unparse_flags()
print(json.dumps(results))
"""


def flag_verdicts(program, module, argument_lists):
    """What absl makes of each argument list in a fresh Python, with the flags of `module`'s command (its
    `COMMAND`, a trainer.cli.Command): "ok", or the error absl gives."""
    result = run([sys.executable, "-c", PARSE_FLAGS, program, module], input=json.dumps(argument_lists))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
