# Everyday entry points. Each runs in the current Python environment (a virtualenv is a good idea).
# Tests come in two tiers: the fast one (no Docker, no real training: the loop and the trial on the fake
# sandbox provider, in seconds) and the slow one (tests marked docker or slow: the real engine, the image,
# real training). `make test` runs both; `make test-fast` only the fast one.
PYTHON ?= python3
# The experiment image's flavor for `make image`: auto (cuda where nvidia-smi lists a GPU), cpu or cuda.
FLAVOR ?= auto
AUTORESEARCH := $(PYTHON) -m autoresearch.runner.cli
# One install stamp per Python environment, redone when pyproject.toml changes.
STAMP := build/install-$(shell $(PYTHON) -c 'import sys, zlib; print(zlib.crc32(sys.prefix.encode()))').stamp

.PHONY: install image test test-fast test-cuda-image bench bench-tui lint

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[dev]'
	@mkdir -p $(@D) && touch $@

image: install
	$(AUTORESEARCH) image --flavor $(FLAVOR)

test: install
	$(PYTHON) -m pytest

test-fast: install
	$(PYTHON) -m pytest -m "not docker and not slow"

# Optional, not in CI (a 2.8 GB download and a 5.6 GB image): build the CUDA image here, GPU or not, and run the
# CPU profile end to end in it.
test-cuda-image: install
	$(AUTORESEARCH) image --flavor cuda
	$(PYTHON) -m pytest -m cuda_image

bench: install
	$(AUTORESEARCH) bench
	$(AUTORESEARCH) bench --loop 3
	$(AUTORESEARCH) bench --slots 1,2,4,8
	$(AUTORESEARCH) bench --report 10000

bench-tui: install
	$(PYTHON) -m autoresearch.tui.bench

lint: install
	ruff check .
	lint-imports

.PHONY: gpu-check
gpu-check: install  # on a GPU box: the GPU profile for the full budget, cold then warm (SANDBOX=process without Docker)
	$(AUTORESEARCH) bench --gpu -o build/gpu-check.json $(if $(SANDBOX),--sandbox $(SANDBOX))

# Opt-in, not in CI: the real Claude Code and Codex (their agent images, from the npm registry) against the scripted
# fake models, honest and hostile, inside a network namespace with only a loopback, so nothing can leave the machine.
.PHONY: clis
clis: install
	$(AUTORESEARCH) image --agent claude-code
	$(AUTORESEARCH) image --agent codex
	unshare --map-root-user --net sh -c 'ip link set lo up && AUTORESEARCH_CLIS=1 AUTORESEARCH_REQUIRE_DOCKER=1 \
		$(PYTHON) -m pytest -p no:cacheprovider -m clis tests/clis -s'
