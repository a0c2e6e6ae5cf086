# The two commands a newcomer needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := var/connector.ini

.PHONY: run test eval bench venv system-deps clean

$(BIN)/connector: setup.cfg pyproject.toml
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/connector

$(DEMO): config/demo.ini
	mkdir -p var
	cp config/demo.ini $(DEMO)

# Start the daemon in the foreground on the demo config (SMTP on 127.0.0.1:2525,
# SQLite in var/, outgoing mail as files in var/outgoing/new).
run: venv $(DEMO)
	$(BIN)/connector -c $(DEMO) run

# Install what the tests need (system packages too, when root) and run them all, on both
# store backends (sqlite, postgresql), in TEST_JOBS processes taking a test file at a time
# (the tests mostly wait on real daemons and sockets). README "Development" has the rest.
TEST_JOBS ?= 3
test: venv system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile

system-deps:
	@bash tests/install-system-deps.sh

# Score reply extraction and MIME parsing on ../shared/corpus; fails below the targets.
eval: venv
	$(BIN)/python bench/eval_corpus.py

# Throughput and latency against a no-op aiosmtpd sink in the same run, end to end,
# a large store (built once, cached in /var/tmp), and the IMAP first scan.
bench: venv system-deps
	$(BIN)/python bench/smtp_bench.py
	$(BIN)/python bench/latency_bench.py
	$(BIN)/python bench/store_bench.py
	$(BIN)/python bench/imap_bench.py
	$(BIN)/python bench/nodes_bench.py

clean:
	rm -rf $(VENV) var *.egg-info
