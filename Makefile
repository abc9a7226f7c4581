# Two commands a new user needs: `make demo` and `make test`. Both create .venv/ when it is missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.saeflow-installed
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export SPARSIFY_DISABLE_TRITON ?= 1
export WANDB_MODE ?= disabled
export HF_HUB_OFFLINE ?= 1
CORES  ?= 2
TARGET ?= all

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@if $(PY) -m pip list 2>/dev/null | grep -qi '^nvidia'; then echo "CUDA packages were pulled in; see constraints.txt" >&2; exit 1; fi
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) $(TARGET)
	@echo "figures written to figures/:"; ls -l figures/

test: $(STAMP)
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) bench/plan.py
	$(PY) bench/cache.py
	$(PY) bench/train.py
	$(PY) bench/influence.py
	$(PY) bench/steer.py

clean:
	rm -rf data figures .snakemake
