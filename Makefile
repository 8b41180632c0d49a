# Two commands do all setup on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

NODE_STAMP := node_modules/.package-lock.json

# `make run HOST=0.0.0.0 PORT=8080`: where the signup pages listen (PUBLIC_BASE_URL follows
# unless set). Plain `=`: only the command line overrides them, not a shell's own $HOST.
HOST = 127.0.0.1
PORT = 8000

.PHONY: install run test lint clean ebook illustrations

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/campaign db upgrade
	$(BIN)/campaign plan check
	@echo
	@echo "The engine is starting on the embedded defaults (SQLite campaign.db, dev sink outbox/)."
	@echo "Sign up at http://$(HOST):$(PORT)/subscribe, then open the confirmation email:"
	@echo "    ls outbox/        # each email is an .eml file: open it in any mail client"
	@echo "Or add a subscriber directly (no confirmation) from another terminal:"
	@echo "    .venv/bin/campaign subscribe you@example.com --name You --timezone Europe/Berlin"
	@echo "Stop with Ctrl-C."
	@echo
	HTTP_HOST=$(HOST) HTTP_PORT=$(PORT) $(BIN)/python run_scheduler.py --http $(HOST):$(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# axe-core for the accessibility tests (skipped, with the reason, where npm is missing).
$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --silent; fi

# Test files run on PYTEST_WORKERS processes, each file whole on one (its fixtures, ports and
# databases are its own); `make test PYTEST_WORKERS=0` runs them in this process, one by one.
PYTEST_WORKERS ?= 2

test: lint $(NODE_STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# Redraw the exercise illustrations (templates/emails/images/) from assets/illustrations/poses.yaml.
illustrations: $(STAMP)
	$(BIN)/python scripts/build_illustrations.py

# Rebuild the ebook PDF from assets/ebook/concepts-of-self-healing.md.
ebook: $(STAMP)
	$(BIN)/python scripts/build_ebook.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
