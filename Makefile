# s2r: the two set-up commands. Each creates .venv when missing and installs into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo_out

.PHONY: demo demo-table test install clean-demo help-docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Stamp file: reinstall only when the package metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python examples/demo.py --out $(DEMO)

# "Does translation help?": segmenters trained on raw, translated and real demo data (2 seeds).
demo-table: install
	$(BIN)/python benchmarks/demo_table.py --out $(DEMO)/table --world $(DEMO)/world

# pytest exits 5 when it collects no test; that is not a failure of the product.
test: install
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

help-docs: install
	$(BIN)/python docs/make_help.py

clean-demo:
	rm -rf $(DEMO)
