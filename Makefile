# visionzoo: two commands do the whole set-up on a fresh Linux machine.
#   make demo   create .venv, install, get Fashion-MNIST, train LeNet-5, point to the explorer
#   make test   install what the tests need and run them
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_OUT ?= runs/demo-lenet5

.PHONY: demo test venv install install-test system-deps data lint clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)

venv: $(VENV)/bin/activate

# torch/torchvision as ranges; pip resolves them to the wheels on this disk where a cap is set.
install: venv
	$(PIP) install -q --disable-pip-version-check -e .

install-test: venv
	$(PIP) install -q --disable-pip-version-check -e '.[test]'

# Debian packages, only when we are root with apt: the real dataset and a browser for tests.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  need=""; \
	  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need="$$need dataset-fashion-mnist"; \
	  [ -n "$(SKIP_BROWSER)" ] || [ -x /usr/bin/chromium ] || need="$$need chromium"; \
	  if [ -n "$$need" ]; then \
	    echo "apt-get install:$$need"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	  fi; \
	else echo "not root with apt: install dataset-fashion-mnist (or let visionzoo download it) yourself"; fi

data: install
	@SKIP_BROWSER=1 $(MAKE) --no-print-directory system-deps
	$(VENV)/bin/visionzoo data fashion-mnist --download

demo: data
	$(VENV)/bin/visionzoo train lenet5 --dataset fashion-mnist --recipe demo --out $(DEMO_OUT) --overwrite
	@echo
	@echo "Next: $(VENV)/bin/visionzoo predict $(DEMO_OUT) YOUR_IMAGE.png"
	@echo "      $(VENV)/bin/visionzoo explore --runs runs   (then open http://127.0.0.1:8000)"

test: install-test system-deps
	$(PY) -m pytest -q

lint: install-test
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
