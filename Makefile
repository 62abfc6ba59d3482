# Every target works on a fresh machine with only python3: the venv is made on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

# constraints.txt: the exact tested versions inside pyproject's ranges (the dev extra
# pulls every extra: onnx, litert, jax).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

DEMO := runs/demo

# The main job on the embedded digits: look at the zoo, train ResNet-20 (He et al. 2015)
# as its paper did, export it for serving, classify a few digit images with it, and search
# a small DenseNet's growth rate and depth.
demo: $(STAMP)
	$(BIN)/cnnbuilder list
	$(BIN)/cnnbuilder show resnet20 --plot $(DEMO)/resnet20.png
	$(BIN)/cnnbuilder train resnet20 --dataset digits --epochs 20 --output $(DEMO)/resnet20 --overwrite
	@echo "training curves: $(DEMO)/resnet20/history.png"
	$(BIN)/cnnbuilder export $(DEMO)/resnet20 --output saved_models/digits/1 --force
	$(BIN)/python -m tools.demo samples $(DEMO)/samples 5 > /dev/null
	$(BIN)/cnnbuilder predict saved_models/digits/1 $(DEMO)/samples/*.png --top-k 3
	@# A short search over DenseNet-BC's growth rate and depth together (tools/densenet_bc_demo.yaml:
	@# densenet_bc100_k12 at depths 10-22); --max-params skips the largest untrained (a skipped trial
	@# does not count against --max-trials, which counts trained ones). Under a minute on 2 cores.
	$(BIN)/cnnbuilder tune tools/densenet_bc_demo.yaml --dataset digits --input-shape 16,16,3 \
		--max-trials 4 --epochs 2 --batch-size 64 --max-params 100000 --output $(DEMO)/tune --overwrite
	@echo "search results: $(DEMO)/tune/tuning.json, $(DEMO)/tune/tuning.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache
