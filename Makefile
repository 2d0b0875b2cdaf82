# wirestream developer commands. `make demo` and `make test` set everything up.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAKE ?= lake

.PHONY: setup lock demo test test-wheel lint stream-demo dataflow-dry-run bench clean schema-doc

setup: $(STAMP)

# Installs exactly the versions in requirements.lock (torch is the CPU build), with --no-deps so that
# nothing is resolved afresh, then the package itself (editable) and pip's consistency check.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m pipelines.devtools.lock --check
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

# Re-resolves every dependency to the newest versions pyproject.toml allows and rewrites the lock; review
# its diff, run `make setup test`, commit both. To move only what a pyproject change needs instead:
# $(PY) -m pipelines.devtools.lock --constraint requirements.lock
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pipelines.devtools.lock

demo: $(STAMP)
	rm -rf $(LAKE)
	$(VENV)/bin/wirestream run --input 'seeds/*' --output $(LAKE)
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT source_format, agency, dateline, language, headline, entity_count, top_topic_label FROM events ORDER BY published_at NULLS LAST"
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT label, count(*) AS mentions, count(DISTINCT text) AS distinct_names FROM entities GROUP BY ALL ORDER BY label"
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT text AS person, count(*) AS mentions FROM entities WHERE label = 'PER' GROUP BY ALL ORDER BY mentions DESC, person LIMIT 15"
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT canonical, label, count(*) AS stories, sum(mentions) AS mentions FROM story_entities WHERE label IN ('PER', 'ORG') GROUP BY ALL ORDER BY stories DESC, mentions DESC LIMIT 10"
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT headline, dateline_place, countries, places FROM events"
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT stage, error_type, count(*) AS n FROM errors GROUP BY ALL"

test: $(STAMP)
	$(PY) -m pytest -q -m "not wheel" tests

# The wheel built, installed into a new venv with the locked dependencies and run from elsewhere (minutes).
test-wheel: $(STAMP)
	$(PY) -m pytest -q -m wheel tests

stream-demo: $(STAMP)
	$(PY) -m pipelines.stream_demo --seeds seeds --output $(LAKE)-stream

dataflow-dry-run: $(STAMP)
	$(VENV)/bin/wirestream dataflow-dry-run --out-dir build/dataflow

# The enrichment core (onnx int8, torch fp32) vs a plain transformers baseline on 200 Reuters stories (needs ../shared/data).
bench: $(STAMP)
	$(VENV)/bin/wirestream bench --input '../shared/data/reuters21578/*.sgm' --limit 200 \
	  --conll ../shared/data/conll2003/eng.testa

lint: $(STAMP)
	$(VENV)/bin/ruff check .

schema-doc: $(STAMP)
	$(VENV)/bin/wirestream schema > docs/tables.md

clean:
	rm -rf $(LAKE) build .pytest_cache
