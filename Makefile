# Every target sets up what it needs from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYAIRBYTE_VENV := .venv-pyairbyte

.PHONY: install demo test test-unit test-integration test-pyairbyte bench bench-cpu bench-chart bench-latency clean

# `make bench PEOPLE=30000 LATENCY=0.3 QUERY_COST=0.02 RECENT_SHARE=0.7 CHANGES=100 REPEAT=3`
# (QUERY_COST: the server's own time per page, growing with the list; RECENT_SHARE: people updated
# in the last 90 days; REPEAT: runs, the table shows medians)
PEOPLE ?= 3000
LATENCY ?= 0.08
QUERY_COST ?= 0
RECENT_SHARE ?= 0
CHANGES ?= 100
REPEAT ?= 1

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) scripts/demo.py

# The repo's own tests, then Airbyte's standard connector tests (offline: see conftest.py).
test: install
	$(PY) -m pytest -q
	$(VENV)/bin/airbyte-cdk connector test .

test-unit: install
	$(PY) -m pytest -q unit_tests

test-integration: install
	$(PY) -m pytest -q integration_tests

$(PYAIRBYTE_VENV)/.installed: constraints-pyairbyte.txt
	$(PYTHON) -m venv $(PYAIRBYTE_VENV)
	$(PYAIRBYTE_VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints-pyairbyte.txt airbyte==0.71.3
	touch $@

test-pyairbyte: $(PYAIRBYTE_VENV)/.installed
	$(PYAIRBYTE_VENV)/bin/python integration_tests/pyairbyte_check.py

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,bench]"
	touch $@

bench: install
	$(PY) scripts/bench.py --people $(PEOPLE) --latency $(LATENCY) --query-cost $(QUERY_COST) \
		--recent-share $(RECENT_SHARE) --changes $(CHANGES) --repeat $(REPEAT)

bench-cpu: install
	$(PY) scripts/bench.py --cpu --people 40000 --changes 0 --repeat $(REPEAT)

bench-chart: $(VENV)/.bench-installed
	$(PY) scripts/bench.py --sizes 1000,3000,10000,30000 --changes 100 --repeat 3 --chart docs/bench.png

# wall/floor against latency, 30,000 people whose updates bunch in recent months (docs/benchmarks.md)
bench-latency: $(VENV)/.bench-installed
	$(PY) scripts/bench.py --people 30000 --latencies 0.08,0.15,0.3,0.5 --query-cost 0.02 --recent-share 0.7 \
		--changes 100 --repeat 3 --chart docs/latency.png

clean:
	rm -rf $(VENV) $(PYAIRBYTE_VENV) .pytest_cache *.egg-info integration_tests/.generated .tmp build
