# gatecore: `make setup figures` (setup + main job), `make test` (tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: setup test figures experiments clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

setup: $(PY)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m ipykernel install --user --name gatecore --display-name "gatecore (.venv)" >/dev/null

test:
	$(PY) -m pytest -q

figures:
	$(PY) -m analysis.figures

clean:
	rm -rf .pytest_cache
