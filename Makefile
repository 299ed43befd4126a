# Two commands do all the set-up: `make demo` and `make test`.
VENV        ?= .venv
STUDIO_VENV ?= .venv-studio
PY          := $(VENV)/bin/python
STATE_DIR   ?= $(CURDIR)/state
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install studio-install test lint demo clean

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# Label Studio pins its own Django, numpy and SDK: it lives in its own environment.
studio-install: $(STUDIO_VENV)/.installed
$(STUDIO_VENV)/.installed:
	python3 -m venv $(STUDIO_VENV)
	$(STUDIO_VENV)/bin/pip install -q --upgrade pip
	$(STUDIO_VENV)/bin/pip install -q label-studio==1.23.2
	touch $@

test: install studio-install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -rs

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: install studio-install
	@echo "make demo is not ready yet: the Label Studio demo is tracked in issue 4." >&2; exit 1

clean:
	rm -rf $(VENV) $(STUDIO_VENV) .pytest_cache .ruff_cache
