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
	@# the C++ CPU kernels of egeunet_monai.accel, compiled once (30-60 s); without a compiler
	@# training runs the slower PyTorch operators instead
	$(PY) -c "from egeunet_monai.accel import kernels; kernels.load()"
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

# The numeric tests under the vector-kernel levels other CPUs get (docs/reliability.md): this CPU's own, AVX2, and
# none; PyTorch's kernels follow ATEN_CPU_CAPABILITY (and the C++ kernels, built per level), its convolutions
# (oneDNN) ONEDNN_MAX_CPU_ISA.
NUMERIC_TESTS ?= tests/networks tests/accel tests/losses tests/transforms tests/metrics
.PHONY: test-dispatch
test-dispatch: setup  ## the numeric tests at ATEN_CPU_CAPABILITY unset, avx2 and default
	env -u ATEN_CPU_CAPABILITY -u ONEDNN_MAX_CPU_ISA $(PY) -m pytest $(NUMERIC_TESTS) $(ARGS)
	env ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest $(NUMERIC_TESTS) $(ARGS)
	env ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 $(PY) -m pytest $(NUMERIC_TESTS) $(ARGS)

clean:
	rm -rf runs models/model.pt models/model.ts dist
