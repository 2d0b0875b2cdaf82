# wirestream developer commands. `make demo` and `make test` set everything up.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAKE ?= lake

.PHONY: setup demo test lint stream-demo dataflow-dry-run bench clean schema-doc

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel (an unpinned torch pulls a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(LAKE)
	$(VENV)/bin/wirestream run --input 'seeds/*' --output $(LAKE)
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT source_format, agency, dateline, language, headline, entity_count, top_topic_label FROM events ORDER BY published_at NULLS LAST"
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT label, count(*) AS mentions, count(DISTINCT text) AS distinct_names FROM entities GROUP BY ALL ORDER BY label"
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT text AS person, count(*) AS mentions FROM entities WHERE label = 'PER' GROUP BY ALL ORDER BY mentions DESC, person LIMIT 15"
	$(VENV)/bin/wirestream query --lake $(LAKE) "SELECT stage, error_type, count(*) AS n FROM errors GROUP BY ALL"

test: $(STAMP)
	$(PY) -m pytest -q tests

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
