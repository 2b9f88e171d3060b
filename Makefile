# Kernel Rosetta — the two commands of the quick start, and a few more.
#   make bench      set up .venv (first time), then verify + time everything that can run here
#   make test       set up .venv (first time), then run the test suite
#   make quick      the same comparison on a short ladder (under a minute)
#   make train      train the MLP with every backend -> results/<machine>/train_mlp.json + charts
#   make train-gpt  train the character GPT with every backend -> results/<machine>/train_gpt.json + charts
#   make report     the static site of every committed result -> results/report/index.html
#   make build      compile every CUDA kernel (NVRTC, sm_90 and sm_80) and every Mojo module
#   make gpu-check  on a GPU machine, with its own python3 and NOTHING installed: GPU tests,
#                   then a full CUDA + peers run; results go to $(GPU_OUT)
#   make clean      remove .venv and caches

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
GPU_OUT ?= $(if $(OUT),$(OUT)/results,)

.PHONY: bench test quick train train-gpt report build gpu-check calibrate clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,cuda,mojo]"
	@touch $(STAMP)

bench: $(STAMP)
	$(PY) -m harness run

quick: $(STAMP)
	$(PY) -m harness run --quick

train: $(STAMP)
	$(PY) -m harness train mlp

train-gpt: $(STAMP)
	$(PY) -m harness train gpt

report: $(STAMP)
	$(PY) -m harness report

test: $(STAMP)
	$(PY) -m pytest

build: $(STAMP)
	$(PY) -m harness build -b cuda --arch sm_90
	$(PY) -m harness build -b cuda --arch sm_80
	$(PY) -m harness build -b mojo

calibrate: $(STAMP)
	$(PY) -m harness calibrate

# No venv, no install: a GPU box may have no network. Uses the machine's python3 as is.
gpu-check:
	$(PYTHON) -m harness doctor
	$(PYTHON) -m pytest -q -m gpu -p no:cacheprovider tests
	$(PYTHON) -m harness run -b cuda,cupy,torch $(if $(GPU_OUT),--out $(GPU_OUT),)
	$(PYTHON) -m harness train mlp -b numpy,cuda,torch-cpu $(if $(GPU_OUT),--out $(GPU_OUT),)
	$(PYTHON) -m harness train gpt -b numpy,cuda,torch-cpu $(if $(GPU_OUT),--out $(GPU_OUT),)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks *.egg-info
