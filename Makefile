# Inclavare — `make demo` and `make test` are the two commands a new user runs (Debian, as root).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian's interpreter starts ~2 ms faster than a shared-libpython build (it matters on rune's hot path).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
RUNC ?= $(shell command -v runc 2>/dev/null || echo /usr/sbin/runc)
PYTEST_ARGS ?=

# Debian packages the project and its tests use (runc, busybox and the container engines the tests
# drive; swtpm and skopeo for the TPM and image work; gcc for rune's native launcher; libtss2-dev,
# pkg-config and libffi-dev to build tpm2-pytss, which PyPI ships as source only; fuse3 and
# libfuse3-dev for pyfuse3, the node agent's configfs-tsm inside sim TDX/SNP containers).
APT_PACKAGES := runc busybox-static containerd podman skopeo umoci docker-registry \
	swtpm swtpm-tools tpm2-tools containernetworking-plugins conmon uidmap \
	fuse-overlayfs slirp4netns gcc libc6-dev make python3-venv postgresql mmdebstrap \
	libtss2-dev pkg-config libffi-dev fuse3 libfuse3-dev

.PHONY: setup apt venv test demo bench clean

setup: apt venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "setup: Debian packages present"; fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(wildcard src/inclavare/native/*.c src/inclavare/runtime/launcher.py)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	$(VENV)/bin/inclavare install-rune --output $(VENV)/bin/rune --runc $(RUNC)
	@touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/inclavare demo

bench: setup
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
