# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo

.PHONY: install demo test bench gallery gpu-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is installed first and alone so that no other package can pull a multi-GB CUDA build of it.
$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$$(grep -E '^torch==' requirements.txt)"
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .  # the package itself (console script `workbench`)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/workbench fewshot --dataset sst2 --methods zero-shot,linear-probe,random,vocab \
		--k 16 --seeds 13,21,42 --steps 200 --out $(DEMO_OUT) --overwrite

test: install
	OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python benchmarks/throughput.py

# docs/figures.md and docs/figures/*.png: every notebook at tiny scale, every figure as a PNG (needs chromium)
gallery: install
	OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false $(BIN)/python docs/gallery.py

# on a CUDA machine: throughput + MFU, batched meta-step, SVGD CUDA vs CPU, grid tuning, CUDA tests, smoke suite
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py --out runs/gpu-check-$$(date +%Y%m%d-%H%M%S)

clean:
	rm -rf $(VENV) .pytest_cache
