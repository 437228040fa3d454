# The two commands of the README: `make run` and `make test`. Everything else serves them.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-installed
HOST ?= 127.0.0.1
PORT ?= 8000
FAKE_TWILIO_PORT ?= 8010
# PostgreSQL for the second test run (trust auth on this machine; a fresh database is made per run).
TEST_PG_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: run test setup browser lint typecheck test-sqlite test-postgres test-shifted migrate seed clean

# -qq: pip prints errors only (its notices and setuptools' build warnings would bury the logins).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Stepdown and its dependencies into $(VENV) (a few minutes the first time)"
	$(BIN)/python -m pip install -qq --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

# The browser tests drive Debian's Chromium through Playwright (no browser download).
browser:
	@if [ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null 2>&1; then :; \
	else \
		echo "installing Debian's chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi
	@# The Chinese survey pages' screenshots need a CJK font (without one every character is a box).
	@if fc-list :lang=zh 2>/dev/null | grep -q .; then :; \
	else \
		echo "installing a Chinese font for the browser tests' screenshots"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq fonts-wqy-microhei; \
	fi

migrate: setup
	$(BIN)/stepdown db upgrade

# The seed writes SMS links (welcome, survey): they follow PORT like the server (config/settings.py).
seed: migrate
	PORT=$(PORT) FAKE_TWILIO_PORT=$(FAKE_TWILIO_PORT) $(BIN)/stepdown seed-demo --if-empty --quiet

## make run: set up, migrate the SQLite database, seed the demo once, then serve on
## http://127.0.0.1:8000 with the scheduler (and dispatcher) and the fake Twilio beside it; Ctrl-C
## stops all three. The URLs and the demo logins are printed last, once the server answers.
## Other ports: make run PORT=8300 FAKE_TWILIO_PORT=8310.
run: seed
	@HOST=$(HOST) PORT=$(PORT) FAKE_TWILIO_PORT=$(FAKE_TWILIO_PORT) $(BIN)/python -m server.devrun

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy server api notifications config bench

test-sqlite: setup browser
	$(BIN)/pytest -q

# In CI (CI=true) PostgreSQL is required; on a laptop without it the run says so and skips it.
# The PostgreSQL pass spends half its time waiting on the server: it runs as two pytest processes
# side by side, this half and the rest, each with its own fresh database.
PG_HALF := tests/api tests/browser tests/pages tests/notifications

test-postgres: setup browser
	@if $(BIN)/python -c "import psycopg,sys; psycopg.connect('$(TEST_PG_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		echo "== tests on PostgreSQL$${STEPDOWN_TEST_NOW:+, clock moved to $$STEPDOWN_TEST_NOW} (two halves side by side, a database each) =="; \
		half=$$(mktemp); status=0; \
		( STEPDOWN_TEST_DATABASE_URL=$(TEST_PG_URL) $(BIN)/pytest -q $(PG_HALF) > $$half 2>&1 ) & half_pid=$$!; \
		STEPDOWN_TEST_DATABASE_URL=$(TEST_PG_URL) $(BIN)/pytest -q $(addprefix --ignore=,$(PG_HALF)) || status=1; \
		wait $$half_pid || status=1; echo "-- $(PG_HALF)"; cat $$half; rm -f $$half; exit $$status; \
	elif [ "$${CI:-}" = "true" ]; then \
		echo "PostgreSQL at $(TEST_PG_URL) is unreachable; CI needs it" >&2; exit 1; \
	else \
		echo "!! PostgreSQL at $(TEST_PG_URL) unreachable: skipped the PostgreSQL run (CI runs it)"; \
	fi

# The suite runs frozen at one instant (tests/clock.py). CI runs the SQLite pass a second time with
# that instant moved 400 days on and to 23:30 UTC, so a test that depends on the date fails now.
TEST_NOW_SHIFTED ?= 2028-01-05T23:30:00Z

test-shifted: setup browser
	@echo "== tests on SQLite, clock moved to $(TEST_NOW_SHIFTED) =="
	STEPDOWN_TEST_NOW=$(TEST_NOW_SHIFTED) $(BIN)/pytest -q

## make test: install what tests need, lint, type-check, run the suite on SQLite and on PostgreSQL
## side by side; every pass runs, any failure fails. In CI (CI=true) the PostgreSQL pass runs with
## the suite's clock moved to TEST_NOW_SHIFTED, so a test that depends on the date fails in CI (a
## third pass would not fit CI's 15 minutes on two cores: three took 20 min 43 s on this machine);
## `make test-shifted` runs the SQLite pass moved. The PostgreSQL output is printed once it ends.
## Each pass has its own database and ports; the screenshots in test-artifacts/ are the last pass's.
test: lint typecheck browser
	@status=0; pg_log=$$(mktemp); pg_now=; \
	if [ "$${CI:-}" = "true" ]; then pg_now=$(TEST_NOW_SHIFTED); fi; \
	( STEPDOWN_TEST_NOW=$$pg_now $(MAKE) --no-print-directory test-postgres > $$pg_log 2>&1 ) & pg_pid=$$!; \
	echo "== tests on SQLite =="; \
	$(MAKE) --no-print-directory test-sqlite || status=1; \
	wait $$pg_pid || status=1; \
	cat $$pg_log; rm -f $$pg_log; \
	if [ $$status -ne 0 ]; then echo "!! at least one test pass failed (see above)" >&2; fi; \
	exit $$status

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache test-artifacts
