# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv once; the stamp file makes a second run skip the install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export OMP_WAIT_POLICY := PASSIVE
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: nothing after this may resolve another torch build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/ptychopinn demo --output-dir demo_output

test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# ruff on everything; mypy on the core (src/ptychopinn, settings in pyproject.toml's [tool.mypy])
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# Benchmark-only peer: pty-chi (ptychi 2.2.0) beside ptychopinn.refine on the quality scan. Never a runtime
# dependency. ptychi itself goes in with --no-deps, so pip can never resolve torch or torchvision (its
# torchvision import is served by benchmarks/_peer_stubs at run time); its pure-Python dependencies are then
# installed only if missing, under PIP_CONSTRAINT (torch pinned; none of them needs torch). Idempotent: the
# stamp skips both installs on a second run, and pip skips what is already satisfied.
PEER_STAMP := $(VENV)/.peer-ptychi-2.2.0
PTYCHI_DEPS := h5py "numpy>=2.1" pandas "pydantic>=2,<3" scikit-image scikit-learn scipy tqdm "matplotlib>=3.10.6" tifffile

.PHONY: bench-peer

$(PEER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps "ptychi==2.2.0"
	$(BIN)/python -m pip install --quiet $(PTYCHI_DEPS)
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

bench-peer: $(PEER_STAMP)
	$(BIN)/python benchmarks/ptychi_peer.py

# Opt-in: tike's Siemens star (real synchrotron data) from the raw file with the default command line; downloads
# the tike 0.26.0 sdist once into ~/.cache/ptychopinn (pip download, no install). See benchmarks/real_data.py.
.PHONY: bench-real
bench-real: $(STAMP)
	$(BIN)/python benchmarks/real_data.py --images docs/images

clean:
	rm -rf $(VENV) demo_output real_data_output
