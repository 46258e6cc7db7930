# felix-p4: `make demo` runs the main scenario on the embedded target, `make test` is the
# one test entry point (lint, types, tests). Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHIM := build/felix-p4-shim
# v5.8.2 is the newest kustomize that builds with Go 1.26 (v5.8.3 needs Go 1.27).
KUSTOMIZE_VERSION := v5.8.2
KUSTOMIZE := build/tools/kustomize-$(KUSTOMIZE_VERSION)

.PHONY: all demo demo-netns test lint typecheck pytest differential proto pipeline p4info bench fuzz \
	clean shim dist kustomize swx swx-dpdk-check swx-if-dpdk

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/felix-p4 sim examples/three-pods.yaml
	$(BIN)/felix-p4 sim examples/default-deny.yaml
	$(BIN)/felix-p4 sim examples/services.yaml
	$(BIN)/felix-p4 sim examples/two-nodes.yaml

# Real pods in network namespaces talk through the driver and the embedded target bound to their
# interfaces (root; elsewhere it says why it cannot run): the model engine, then P4-DPDK where it
# is installed. felix_p4/lab, docs/interfaces.md.
demo-netns: $(STAMP) swx-if-dpdk
	$(BIN)/python -m felix_p4.lab

test: $(STAMP) swx-if-dpdk lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check felix_p4 calico_proto tests fuzz bench
	$(BIN)/ruff format --check felix_p4 tests fuzz bench

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected nothing; that must fail the target, and it does.
# tests/deploy needs the shim and kustomize; building them here keeps pytest's per-test
# timeout for the tests themselves.
pytest: $(STAMP) $(SHIM) $(KUSTOMIZE)
	KUSTOMIZE=$(abspath $(KUSTOMIZE)) $(BIN)/pytest -q

# Differential tests (tests/differential): the behavioural model and P4-DPDK given the same
# entries and the same frames, compared packet by packet. `make test` runs a sample; this runs
# thousands of cases (about half an hour on 2 cores). Needs DPDK (make swx).
differential: $(STAMP) swx
	DIFFERENTIAL=thorough $(BIN)/pytest -q -p no:timeout tests/differential

# The Felix shim (packaging/felix-p4-shim.c): static, so it runs in calico-node's image, which
# has no libc to link against at run time.
SHIM_CC ?= gcc
$(SHIM): packaging/felix-p4-shim.c
	mkdir -p build
	$(SHIM_CC) -static -O2 -Wall -Wextra -Werror -o $@ $<
shim: $(SHIM)

# What packaging/Containerfile copies: the wheel and the shim. build/lib is setuptools' staging
# directory; a stale one would put deleted modules into the wheel.
dist: $(STAMP) $(SHIM)
	rm -rf dist build/lib build/bdist.*
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .
	cp $(SHIM) dist/felix-p4-shim

# kustomize renders deploy/ in tests/deploy; built once from the Go module proxy into build/
# (about two minutes on a cold module cache).
$(KUSTOMIZE):
	@command -v go >/dev/null || { echo "kustomize is built with Go; install Go >= 1.26" >&2; exit 1; }
	mkdir -p build/tools/gobin
	GOTOOLCHAIN=local GOBIN=$(abspath build/tools/gobin) \
		go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mv build/tools/gobin/kustomize $@
kustomize: $(KUSTOMIZE)

# Regenerate Felix's wire bindings; tests/unit/test_proto_current.py checks they are current.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. calico_proto/felixbackend.proto

# Recompile the P4 program with p4c's DPDK back end and refresh every checked-in artefact: the
# P4Info, the P4-DPDK spec, the context JSON and the BF-RT/TDI JSON (IPDK's pipeline builder
# needs the last three). Needs p4c-dpdk from p4lang/p4c (release 1.2.4.8 was used):
#   make pipeline P4C_DPDK=/path/to/p4c-dpdk
# Copy propagation into table keys is off: it would undo the scratch-header keys the program
# lays out for P4-DPDK (pipeline/README.md, "Fitting P4-DPDK"). Tests check the artefacts
# without p4c (tests/unit/test_pipeline_contract.py).
P4C_DPDK ?= p4c-dpdk
P4C_FLAGS := --arch pna --excludeMidendPasses P4::LocalCopyPropagation
pipeline:
	$(P4C_DPDK) $(P4C_FLAGS) --p4runtime-files pipeline/felix_pna.p4info.txtpb \
		--context pipeline/felix_pna.context.json --bf-rt-schema pipeline/felix_pna.bfrt.json \
		-o pipeline/felix_pna.spec pipeline/felix_pna.p4
	@# The context records the compiler's command line: keep the build machine's path out.
	sed -i 's#"compile_command" : "[^ "]*p4c-dpdk #"compile_command" : "p4c-dpdk #' \
		pipeline/felix_pna.context.json
p4info: pipeline

# P4-DPDK engine (felix_p4/swx, see its README): DPDK's internal SWX headers that generated
# pipeline C includes (from Debian's source package; never committed), then the C helper library,
# which the engine itself builds on first use into build/swx/cache (a checkout's default).
SWX_HEADERS := build/dpdk-internal/VERSION
DPDK_PC := $(shell pkg-config --variable=pcfiledir libdpdk 2>/dev/null)/libdpdk.pc

swx: swx-dpdk-check $(SWX_HEADERS) $(STAMP)
	$(BIN)/python -c 'from felix_p4.swx import engine; print(engine.helper_library())'

swx-dpdk-check:
	@pkg-config --exists libdpdk || { echo "DPDK is not installed:" \
		"run felix_p4/swx/install-dpdk.sh as root" >&2; exit 1; }

$(SWX_HEADERS): felix_p4/swx/fetch-dpdk-headers.sh $(DPDK_PC)
	bash $< $(@D)

# `make test` builds the engine where DPDK is installed; elsewhere its tests skip and say why.
swx-if-dpdk:
	@if pkg-config --exists libdpdk 2>/dev/null; then $(MAKE) --no-print-directory swx; \
	else echo "DPDK is not installed: the SWX engine tests will skip"; fi

# Coverage-guided fuzzing of the Felix input path (atheris); not part of make test.
FUZZ_RUNS ?= 200000
fuzz: $(STAMP)
	$(BIN)/pip install --quiet atheris==3.0.0
	mkdir -p build/fuzz-corpus
	$(BIN)/python fuzz/fuzz_felix.py -runs=$(FUZZ_RUNS) -max_len=4096 build/fuzz-corpus

# Benchmarks (not part of `test`): `make bench BENCH_ARGS="--scale S --profile"`; see bench/RESULTS.md.
# Where DPDK runs (make swx) they include packets per second on one core, P4-DPDK engine vs
# behavioural model (--forwarding).
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build/swx build/dpdk-internal
