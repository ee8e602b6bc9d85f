# fairstream: the two set-up commands are `make demo` and `make test` (see README.md).
# Each installs what it needs first: uv (from PyPI), then Debian's composer, php and kcat
# (and prometheus, for its promtool: the tests check the shipped alert rules with it).

# uv from PATH, or the one `python-deps` installs with pip (always reachable as a module).
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
APT_PACKAGES := composer php-cli php-zip php-curl kcat unzip nginx-light wrk chromium prometheus
RUN := $(UV) run --frozen

.PHONY: demo test lint unit integration e2e bench soak deps python-deps system-deps clean

demo: deps
	$(RUN) fairstream demo

test: deps lint
	$(RUN) pytest

lint: python-deps
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

unit: python-deps
	$(RUN) pytest tests/unit

integration: python-deps
	$(RUN) pytest tests/integration

e2e: deps
	$(RUN) pytest tests/e2e

# Benchmarks are not tests: ratios against a baseline measured in the same run.
bench: deps
	$(RUN) python -m tests.benchmarks.run

# Faults drawn at random under load for SOAK_MINUTES, then the history is checked
# (tests/faults/soak.py; SOAK_SEED reproduces a run; SOAK_RATE releases/s of distinct
# packages besides the fault tests' load, 0 for none).
SOAK_MINUTES ?= 15
SOAK_RATE ?= 200
soak: deps
	$(RUN) python -m tests.faults.soak --minutes $(SOAK_MINUTES) --rate $(SOAK_RATE) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

deps: python-deps system-deps

python-deps:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --break-system-packages uv
	$(UV) sync --frozen --quiet

# composer, php and kcat come from Debian; installed only when one is missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing from Debian:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

clean:
	-$(RUN) fairstream dev down
	rm -rf .fairstream
