# One-command set-up: `make train` and `make test` create .venv and install everything on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel that lies on these machines; a plain `pip install torch` would download a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
ARGS ?=

.PHONY: setup train evaluate infer test test-fast clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	@# the C++ CPU kernels of EGEUNet(fused_ops=True), compiled once (about half a minute); without a compiler
	@# training runs the slower PyTorch operators instead
	$(PY) -c "from egeunet_monai.networks.blocks import cpu_kernels; cpu_kernels.available()"
	touch $@

setup: $(VENV)/.installed

train: setup  ## train the bundle (synthetic data unless ARGS="--dataset_dir DIR")
	$(PY) -m monai.bundle run training --config_file configs/train.json $(ARGS)

evaluate: setup
	$(PY) -m monai.bundle run evaluating --config_file "['configs/train.json','configs/evaluate.json']" $(ARGS)

infer: setup
	$(PY) -m monai.bundle run --config_file configs/inference.json $(ARGS)

test: setup  ## the whole suite, as CI runs it
	bash scripts/run_tests.sh $(ARGS)

test-fast: setup  ## skip the slow end-to-end tests
	$(PY) -m pytest tests -m "not slow" $(ARGS)

clean:
	rm -rf runs models/model.pt models/model.ts dist
