# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
AIM := HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(VENV)/bin/aim
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
	@echo "== segment: look harder for pedestrians (masks and overlays in $(DEMO_OUT)/segment)"
	$(AIM) segment --focus pedestrian --seed 0 --overlay --output-dir $(DEMO_OUT)/segment
	@echo "== generate: the demo arithmetic LM, clean and at sigma 2"
	$(AIM) generate --prompt "23+45=" --prompt "31-17=" --prompt "8+9=" --sigma 2 --seed 0 --compare
	@echo "== calibrate: the sigma that brings the demo classifier to 60% accuracy"
	@mkdir -p $(DEMO_OUT)/tiers
	$(AIM) calibrate --target-acc 0.6 --write-profile $(DEMO_OUT)/tiers/tier-60.yaml
	$(AIM) classify --profile $(DEMO_OUT)/tiers/tier-60.yaml --compare
	@echo "== verify: the tier's certificate holds on the model and data it was certified on"
	$(AIM) verify $(DEMO_OUT)/tiers/tier-60.yaml
	@echo "== report: one page with the curve, the tier's interval and examples ($(DEMO_OUT)/report.html)"
	$(AIM) report --tiers $(DEMO_OUT)/tiers -o $(DEMO_OUT)/report.html

# Two workers (pytest-xdist): most tests start the real CLI in a subprocess and wait on torch's import.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2

# Lint (ruff: lint and format check), type check (mypy) and the import contract (import-linter),
# all configured in pyproject.toml; CI runs them before the tests.
.PHONY: lint typecheck contract check
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory typecheck contract

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The layers cli -> api -> pipelines -> models and core -> leaves (docs/design.md, "Layers").
contract: $(STAMP)
	$(VENV)/bin/lint-imports

# The fast lane for development: lint, types, contract, then the tests not marked slow, stopping at the first failure.
check: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -x -n 2 -m "not slow"

# The extras' suites below (CI runs all three, .ci/run). In them, AIM_REQUIRE_EXTRAS=1 makes a test file
# that would skip whole for want of its extra fail instead (tests/conftest.py): a broken install cannot pass
# as "skipped". -rs lists each single test that skips, with its reason; pytest's exit 5 (no tests) fails too.
test-eval test-ray test-vllm: export AIM_REQUIRE_EXTRAS = 1
test-eval test-ray test-vllm: export PYTEST_ADDOPTS += -rs

# The vLLM plugin's tests, in their own venv (vLLM pins its own torch; ~4 GB of wheels, no GPU needed).
VLLM_VENV ?= .venv-vllm
.PHONY: test-vllm
test-vllm:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet -e '.[dev,vllm]'
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(VLLM_VENV)/bin/python -m pytest -q tests/test_vllm_plugin.py tests/test_vllm_tier_policy.py tests/test_serving.py

# Image tiers on Ray Serve and offline jobs on Ray Data, in their own venv (Ray's wheels; a local
# 2-CPU Ray is started and stopped by the tests; a few minutes on a shared 2-core machine).
RAY_VENV ?= .venv-ray
.PHONY: test-ray
test-ray:
	test -x $(RAY_VENV)/bin/python || $(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install --quiet -e '.[dev,ray]'
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(RAY_VENV)/bin/python -m pytest -q tests/test_ray_tiers.py tests/test_ray_data.py tests/test_ray_serve.py tests/test_tier_server_live.py tests/test_ray_certificates.py

# The lm-evaluation-harness tests (`aim eval`, calibration on lm-eval tasks), in their own venv:
# lm-eval pulls datasets, evaluate and more, so `make test` runs without it (those tests skip there).
EVAL_VENV ?= .venv-eval
.PHONY: test-eval
test-eval:
	test -x $(EVAL_VENV)/bin/python || $(PYTHON) -m venv $(EVAL_VENV)
	$(EVAL_VENV)/bin/python -m pip install --quiet -e '.[dev,eval]'
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 $(EVAL_VENV)/bin/python -m pytest -q tests/test_lm_eval.py tests/test_lm_eval_missing.py tests/test_hostile_round3_lm_eval.py tests/test_api_evaluate.py

benchmark: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run.py

# The documentation site (mkdocs.yml, pages in docs/), built into site/; any warning fails it.
.PHONY: docs
docs: $(STAMP)
	$(PY) -m mkdocs build --strict -d site

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .import_linter_cache

# `aim report` pages in a real headless browser (tests/test_report_browser.py): no console error,
# every figure and image decoded, a screenshot that is not blank. Needs the system's Chromium
# (Debian: apt-get install chromium; this target installs nothing) and skips cleanly without it.
.PHONY: test-browser
test-browser: $(STAMP)
	AIM_BROWSER_TESTS=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -rs tests/test_report_browser.py
