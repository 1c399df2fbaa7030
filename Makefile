# The two commands: `make run` and `make test`. Everything else is a step they use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check bench lint format typecheck sysdeps sysdeps-test lock clean

run: $(STAMP) sysdeps
	$(BIN)/pantau dev

# Two workers (pytest-xdist), a test file per worker at a time: the suite mostly waits on its
# servers (it keeps 40 % of one core busy), so two cut its time. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

test: $(STAMP) sysdeps-test check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) sysdeps-test
	$(BIN)/pytest -m "bench or slow" -p no:cacheprovider --timeout 1800

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The virtualenv with Pantau and its tools at the versions in constraints.txt (the ones we test).
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Pantau needs Python >= 3.11; set PYTHON=python3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# grafana-client's niquests needs urllib3-future, whose wheel replaces urllib3 in the whole
	# venv (a .pth hook) and breaks requests' users (schemathesis); built from source with
	# URLLIB3_NO_OVERRIDE=1 it installs beside urllib3 as urllib3_future, which niquests uses.
	URLLIB3_NO_OVERRIDE=1 $(BIN)/pip install --quiet --no-binary urllib3-future -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Debian packages: installed when missing and we are root; otherwise a list of what to install.
sysdeps:
	deploy/debian-packages.sh run

sysdeps-test:
	deploy/debian-packages.sh test

# Refresh constraints.txt from what is installed now (after changing pyproject.toml).
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v '^pantau' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
