# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# CUDA users: TORCH_SPEC="torch==2.x.y" make demo  (or install torch into .venv first).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
DEMO := runs/demo

.PHONY: install demo test browser bench clean

$(BIN)/unetseg: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/unetseg

# Synthetic shapes -> train a small U-Net (~1 min on 2 CPU cores) -> evaluate -> predicted masks + overlays -> report.html.
demo: install
	rm -rf $(DEMO)
	$(BIN)/unetseg demo-data --out $(DEMO)/data --count 120 --size 128x96
	$(BIN)/unetseg train --data $(DEMO)/data --out $(DEMO)/run --config configs/demo.json
	$(BIN)/unetseg evaluate --model $(DEMO)/run --split val --out $(DEMO)/run/eval
	$(BIN)/unetseg predict --model $(DEMO)/run --input $(DEMO)/data/images --out $(DEMO)/predictions
	$(BIN)/unetseg report $(DEMO)/run --out $(DEMO)/report.html

test: install browser
	$(BIN)/python -m pytest -q

# The report's browser test reads the page rendered by Debian's chromium: installed here where we may (root with
# apt-get; UNETSEG_NO_BROWSER=1 opts out), else that test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ -z "$$UNETSEG_NO_BROWSER" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { timeout 120 apt-get update -qq >/dev/null 2>&1 && \
	      DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq chromium >/dev/null 2>&1; }; } && \
	  echo "installed chromium for the report's browser test"; } || \
	echo "chromium not installed (needs root and apt-get): the report's browser test will be skipped"

# The benchmark tables of benchmarks/README.md (needs ../shared/data/carvana_sample; ~35 min on 2 CPU cores;
# benchmarks/patches.py runs apart: about 30 min).
bench: install
	$(BIN)/python benchmarks/ceiling.py
	$(BIN)/python benchmarks/baseline.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/onnx_vs_torch.py
	$(BIN)/python benchmarks/gpu.py
	$(BIN)/python benchmarks/plan_speed.py
	$(BIN)/python benchmarks/predict_speed.py
	$(BIN)/python benchmarks/report_speed.py
	$(BIN)/python benchmarks/node_cache.py
	$(BIN)/python benchmarks/large_image.py
	$(BIN)/python benchmarks/budget.py --budget 5m

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache
