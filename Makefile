# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
AIM := HF_HUB_OFFLINE=1 $(VENV)/bin/aim
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo-output

.PHONY: demo test install benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@mkdir -p $(DEMO_OUT)
	@echo "== classify: clean demo classifier on its sample images"
	$(AIM) classify --seed 0
	@echo "== classify: the same images at sigma 4, beside the clean prediction"
	$(AIM) classify --sigma 4 --seed 0 --compare

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

benchmark: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
