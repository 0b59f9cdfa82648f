# Two commands on a fresh machine with only python3:
#   make run    set up .venv and serve on http://127.0.0.1:8000
#   make test   set up .venv and run every test (lint and types included)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m aserve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check aserve tests benchmarks
	$(BIN)/ruff format --check aserve

typecheck: $(STAMP)
	$(BIN)/mypy

# The second run: the parsing and framing suites again with h11's public API only
# (aserve/connection.py falls back to it when a new h11 lacks a private name).
H11_PUBLIC_TESTS := tests/test_connection*.py tests/test_engine_corpus.py \
	tests/test_engine_framing.py tests/test_engine_limits.py tests/test_engine_body.py \
	tests/test_engine_keepalive.py tests/test_engine_streaming.py

# Most tests wait on sockets and timers more than they compute: four at a time.
# Those marked serial measure the whole process (memory, live objects) or
# timing to the second, and run alone afterwards.
test: $(STAMP) lint typecheck
	$(BIN)/pytest -n 4 -m "not serial"
	$(BIN)/pytest -m serial
	ASERVE_H11_PUBLIC_ONLY=1 $(BIN)/pytest -q -p no:randomly -n 4 $(H11_PUBLIC_TESTS)

# Benchmarks (benchmarks/README.md): the peers and matplotlib go in their own venv,
# benchmarks/.venv, never in the project's. `make bench` runs a subset that takes
# about five minutes and charts it into benchmarks/results/ (not committed);
#   make bench BENCH_ARGS=--all     every group (see the README for how long)
BENCH_VENV := benchmarks/.venv
BENCH_ARGS ?= --group pipeline,bodies,startup --duration 5 --warmup 2

bench:
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements.txt
	$(BENCH_VENV)/bin/python benchmarks/run.py $(BENCH_ARGS)
	$(BENCH_VENV)/bin/python benchmarks/plot.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Coverage-guided fuzzing of the connection engine (see fuzz/README.md).
#   make fuzz                   run for 300 s
#   make fuzz FUZZ_SECONDS=60   run for a minute
FUZZ_SECONDS ?= 300
FUZZ_IGNORE ?=
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[fuzz]'
	$(BIN)/python fuzz/seed.py
	mkdir -p fuzz/crashes
	FUZZ_IGNORE='$(FUZZ_IGNORE)' nice -n 10 $(BIN)/python fuzz/fuzz_protocol.py \
		-max_total_time=$(FUZZ_SECONDS) -max_len=4096 -dict=fuzz/http.dict \
		-artifact_prefix=fuzz/crashes/ fuzz/corpus
