# On a fresh clone: `make serve` sets up and starts the service (a demo model when
# SONA_CHECKPOINT is unset); `make test` sets up and runs the whole test suite (ruff, a strict
# build of the docs site, pytest); `make docs` builds the site into site/.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

.PHONY: install serve test lint docs clean

HOST ?= 127.0.0.1
PORT ?= 8000

# serving needs the project and its dependencies only; the tests add the dev extra
$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(SERVE_STAMP)

install: $(STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/sona serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	@# CI: the web page test drives Debian's chromium (elsewhere it skips when chromium is absent)
	@if [ -n "$$CI" ] && ! command -v chromium >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; fi
	@# CI: the real-footage test and bench/ingest.py use vtest.avi from Debian's opencv-doc
	@if [ -n "$$CI" ] && [ ! -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ]; then \
		apt-get update -qq && apt-get install -y -qq opencv-doc >/dev/null; fi
	@# CI: the live-stream test serves vtest.avi with Debian's ffmpeg on 127.0.0.1
	@if [ -n "$$CI" ] && ! command -v ffmpeg >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null; fi
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MKDOCS) build --strict --quiet
	$(BIN)/python -m pytest

# the manual (docs/, mkdocs.yml) as a static site in site/; open site/index.html
docs: $(STAMP)
	$(MKDOCS) build --strict

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
