# promptsep: the human entry point. `make setup` once, then `make demo-separate` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DATA ?= data
SEED ?= 0
TORCH_PINS := torch==2.11.0 torchaudio==2.11.0 torchvision==0.26.0
# Debian packages the tests need (ffmpeg: museval's stempeg and video soundtracks).
APT_TEST := ffmpeg
# Debian packages the data engine reads its sources from (see dataengine/sources.py).
APT_DATA := $(shell cat dataengine/apt-packages.txt 2>/dev/null)

.PHONY: setup test lint data run clean-data

$(VENV)/.installed: pyproject.toml
	@if [ "$$(id -u)" = "0" ] && ! command -v ffmpeg >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_TEST) && apt-get clean; fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) .ci/pip_lean.py $(TORCH_PINS)
	$(PIP) install -q --no-cache-dir -e ".[dev,data]" $(TORCH_PINS)
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

data: setup
	@if [ "$$(id -u)" = "0" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_DATA); \
	else echo "not root: install these Debian packages first: $(APT_DATA)"; fi
	$(VENV)/bin/promptsep data build --out $(DATA) --seed $(SEED)
	for split in val test; do $(VENV)/bin/promptsep data clipart --manifest $(DATA)/$$split.jsonl --out $(DATA)/$${split}_clipart.jsonl; \
		for style in photos drawings; do $(VENV)/bin/promptsep data gcompris --pictures $$style --manifest $(DATA)/$$split.jsonl \
			--out $(DATA)/$${split}_$$style.jsonl; done; done
	cat $(DATA)/report.md

EXAMPLE := promptsep_assets/examples
run: setup
	$(VENV)/bin/promptsep separate $(EXAMPLE)/example_mix.wav --prompt "$$(cat $(EXAMPLE)/example_prompt.txt)" \
		--reference $(EXAMPLE)/example_target.wav --out out

clean-data:
	rm -rf $(DATA)
