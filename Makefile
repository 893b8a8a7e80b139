# fmnist-trainer: `make run` (set up, prepare the data, run the seed experiment) and `make test` (set up, all tests).
# Both are idempotent; the second time the setup is a no-op.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The four official Fashion-MNIST files, for machines without internet. Unset (or missing): TFDS downloads them.
TFDS_MANUAL_DIR ?= $(wildcard $(CURDIR)/../shared/datasets/fashion-mnist)
DATA_DIR ?= $(CURDIR)/.data/tfds
OUT ?= out
RECIPE ?= seed
EPOCHS ?=
PYTEST_ARGS ?=

export DATA_DIR TFDS_MANUAL_DIR

TRAIN := $(PY) -m trainer.task --data_dir=$(DATA_DIR) $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR)) \
	--recipe=$(RECIPE) $(if $(EPOCHS),--epochs=$(EPOCHS)) --overwrite
DATA_STAMP := $(DATA_DIR)/fashion_mnist/3.0.1/dataset_info.json

LINT_VENV := build/lint-venv

.PHONY: setup lint-venv data run test test-fast soak reproduce bench bench-strong bench-speedrun constraints clean

setup: $(VENV)/.installed

# The trainer's runtime, the report's figures (matplotlib) and the test tools, all pinned, in .venv/.
$(VENV)/.installed: requirements.txt requirements-test.txt requirements-report.txt constraints.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt -r requirements-report.txt \
		-c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The launchers' static checkers (checkov, kubectl's kustomize, shellcheck) in a venv of their own: checkov's
# pins clash with the trainer's. tests/test_launch_*.py run them from here.
lint-venv: $(LINT_VENV)/.installed

$(LINT_VENV)/.installed: requirements-lint.txt constraints-lint.txt
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LINT_VENV)/bin/python -m pip install --quiet -r requirements-lint.txt -c constraints-lint.txt
	touch $@

data: $(DATA_STAMP)

$(DATA_STAMP): | $(VENV)/.installed
	$(PY) -m trainer.commands.prepare_data --data_dir=$(DATA_DIR) $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))

## The main job: the seed notebook's experiment, MLP against CNN, then the side-by-side table.
run: setup data
	$(TRAIN) --model=mlp --output_dir=$(OUT)/mlp
	$(TRAIN) --model=cnn --output_dir=$(OUT)/cnn
	$(PY) -m trainer.commands.compare $(OUT)/mlp $(OUT)/cnn

## Every test, in three steps with their own budgets: pytest (in-process and end-to-end), the fault soak (10 kills of
## one process, 3 of two workers: in a vote, evaluation and export; a new seed each time, printed: SOAK_SEED=N
## replays it), the container image (podman; installs what it needs on a fresh Debian machine).
SOAK_SEED ?=
test: setup lint-venv data
	$(PY) -m pytest -m "not image" -n 2 --durations=15 $(PYTEST_ARGS)
	rm -rf $(OUT)/soak-ci && $(PY) tests/e2e/fault_soak.py --kills=10 --worker_kills=3 $(if $(SOAK_SEED),--seed=$(SOAK_SEED)) \
		--out=$(OUT)/soak-ci
	$(PY) -m pytest -m image --durations=5 $(PYTEST_ARGS)

## tests/unit/ alone, the in-process tests (no trainer processes, no containers): under two minutes.
test-fast: setup data
	$(PY) -m pytest tests/unit -n 2 --durations=10 $(PYTEST_ARGS)

## The seed's two 10-epoch runs with the seed recipe, over REPRODUCE_SEEDS; fails unless each model's mean test
## accuracy reaches the notebook's (one run of this constant-learning-rate recipe varies by about half a point).
REPRODUCE_SEEDS ?= 1 2 3
REPRODUCE := $(OUT)/reproduce
comma := ,
reproduce: setup data
	for model in mlp cnn; do for seed in $(REPRODUCE_SEEDS); do \
		$(PY) -m trainer.task --data_dir=$(DATA_DIR) $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR)) \
			--recipe=seed --overwrite --model=$$model --seed=$$seed --output_dir=$(REPRODUCE)/$$model-$$seed \
			|| exit 1; done; done
	$(PY) -m trainer.commands.compare $(foreach m,mlp cnn,$(REPRODUCE)/$(m)-$(firstword $(REPRODUCE_SEEDS))) \
		--out=$(REPRODUCE)/report
	$(PY) -m trainer.commands.check_accuracy \
		$(subst $(eval) ,$(comma),$(foreach s,$(REPRODUCE_SEEDS),$(REPRODUCE)/mlp-$(s)))=0.875 \
		$(subst $(eval) ,$(comma),$(foreach s,$(REPRODUCE_SEEDS),$(REPRODUCE)/cnn-$(s)))=0.905

## The fault soak (docs/distributed.md): a run killed at 30 random moments, then 2 workers killed 10 times (the chief
## and the other in turn; start-up, training, a vote, evaluation, export). A new seed each time; SOAK_SEED=N replays.
soak: setup data
	rm -rf $(OUT)/soak && $(PY) tests/e2e/fault_soak.py --kills=30 --worker_kills=10 $(if $(SOAK_SEED),--seed=$(SOAK_SEED)) \
		--out=$(OUT)/soak

## Benchmarks (docs/benchmarks.md): the seed recipe against the fast one, and the strong model over 3 seeds.
bench: setup data
	$(PY) bench/speed.py

bench-strong: setup data
	$(PY) bench/strong.py

## Time to accuracy: --recipe=speedrun over 5 seeds against the strong recipe, in one run (docs/benchmarks.md).
## On a busy machine SPEEDRUN_ARGS=--strong_epochs=2 times 2 of the strong recipe's epochs and scales them.
SPEEDRUN_ARGS ?=
bench-speedrun: setup data
	$(PY) bench/speedrun.py $(SPEEDRUN_ARGS)

## Re-pin every runtime package after changing requirements.txt.
constraints:
	rm -rf build/constraints-venv && $(PYTHON) -m venv build/constraints-venv
	build/constraints-venv/bin/pip install --quiet -r requirements.txt
	{ echo "# Every package the runtime installs, pinned (pip freeze of a venv built from requirements.txt)."; \
	  echo "# Regenerate after changing requirements.txt: make constraints"; \
	  build/constraints-venv/bin/pip freeze | grep -v '^setuptools=\|^pip='; } > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

## The container image, built with podman and run the way the manifests run it (tests/launch/test_image.py, docs/launch.md).
## On a fresh Debian machine, as root, jobs/image_test.sh first installs podman, runc and mmdebstrap with apt, and
## where no registry is reachable it builds a stand-in for the Dockerfile's base; the second run reuses both.
.PHONY: image-test
image-test: setup data
	jobs/image_test.sh $(PYTEST_ARGS)
