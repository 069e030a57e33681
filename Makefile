# hcpsnap's one entry point: build, dependencies of the local environment,
# the environment itself, tests, demo and benchmarks. Versions are pinned in
# deps/versions.mk; built dependencies are cached in .cache/ (git-ignored).
include deps/versions.mk

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO        ?= go
CACHE     := $(CURDIR)/.cache
BIN       := $(CACHE)/bin
CRDS      := $(CACHE)/crds
OUT       := $(CURDIR)/bin
LOCALENV  := $(CURDIR)/.localenv
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X github.com/hcpsnap/hcpsnap/internal/version.Version=$(VERSION) \
             -X github.com/hcpsnap/hcpsnap/internal/version.Commit=$(COMMIT)
# The hosted etcd's version: $(HOSTED_ETCD_VERSION_DEFAULT) unless given
# (`make env-up HOSTED_ETCD_VERSION=$(ETCD_35_VERSION)`). Each pinned etcd
# line is built into a folder of its own, .cache/bin/etcd-<version>/.
HOSTED_ETCD_VERSION ?= $(HOSTED_ETCD_VERSION_DEFAULT)
ETCD_VERSIONS := $(ETCD_36_VERSION) $(ETCD_35_VERSION)
# The environment's daemons find their binaries and state through these.
export LOCALENV_DIR     := $(LOCALENV)
export LOCALENV_BIN_DIR := $(BIN)
export LOCALENV_CRD_DIR := $(CRDS)
export HOSTED_ETCD_VERSION
export MGMT_ETCD_VERSION

GO_SOURCES := $(shell find . -name '*.go' -not -path './.cache/*' -not -path './deps/*') go.mod go.sum

.PHONY: build
build: $(OUT)/hcpsnap ## Build bin/hcpsnap.

$(OUT)/hcpsnap: $(GO_SOURCES)
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ .

# ---------------------------------------------------------------------------
# The container image (hack/image): built without a container engine into
# bin/image/. `make image` prints the manifest digest last.

IMAGE_DIR         := $(OUT)/image
IMAGE_LAYOUT      := $(IMAGE_DIR)/oci
IMAGE_TARBALL     := $(IMAGE_DIR)/hcpsnap.tar
IMAGE_DIGEST_FILE := $(IMAGE_DIR)/digest
IMAGE_REPOSITORY  ?= hcpsnap
CA_CERTS          ?= /etc/ssl/certs/ca-certificates.crt
REVISION          ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The time of every file of the image and of the image itself: the commit's.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# Where the node agent of the local environment finds images (e2e/localenv).
export LOCALENV_IMAGE_LAYOUTS := $(IMAGE_LAYOUT)

# image_build DIR: the static binary and the image into DIR, the digest into
# DIR/digest (written last, so that a build cut short leaves no digest).
image_build = mkdir -p $(1) && \
  CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(1)/hcpsnap . && \
  SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./hack/image --binary $(1)/hcpsnap --ca-certs $(CA_CERTS) \
    --layout $(1)/oci --tarball $(1)/hcpsnap.tar --repository $(IMAGE_REPOSITORY) --version $(VERSION) --revision $(REVISION) \
    | tee $(1)/build.log | tail -n 1 > $(1)/digest.tmp && \
  mv $(1)/digest.tmp $(1)/digest

.PHONY: image
image: $(IMAGE_DIGEST_FILE) ## Build the container image: OCI layout bin/image/oci, tarball bin/image/hcpsnap.tar; prints the digest last.
	@echo "layout  $(IMAGE_LAYOUT)"
	@echo "tarball $(IMAGE_TARBALL) ($(IMAGE_REPOSITORY):$(VERSION))"
	@cat $(IMAGE_DIGEST_FILE)

$(IMAGE_DIGEST_FILE): $(GO_SOURCES) $(CA_CERTS) $(IMAGE_DIR)/.inputs
	$(call image_build,$(IMAGE_DIR))

# .inputs records what the image is made of besides files (version, commit,
# time); it is rewritten, and the image rebuilt, only when one changes.
$(IMAGE_DIR)/.inputs: FORCE
	@mkdir -p $(@D)
	@want='$(VERSION) $(REVISION) $(SOURCE_DATE_EPOCH) $(IMAGE_REPOSITORY)'; \
	if [ "$$(cat $@ 2>/dev/null)" != "$$want" ]; then echo "$$want" > $@; fi

$(CA_CERTS):
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "$@ is missing: install Debian's ca-certificates package (apt-get install ca-certificates), or set CA_CERTS to a PEM bundle"; exit 3; fi
	apt-get install -y --no-install-recommends ca-certificates

.PHONY: image-reproducible
image-reproducible: $(IMAGE_DIGEST_FILE) ## Build the image a second time from scratch and fail unless the digest is the same.
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	( $(call image_build,$$tmp) ) >/dev/null; \
	if [ "$$(cat $$tmp/digest)" != "$$(cat $(IMAGE_DIGEST_FILE))" ]; then \
	  echo "image-reproducible: a second build gave $$(cat $$tmp/digest), the first $$(cat $(IMAGE_DIGEST_FILE))"; exit 1; fi; \
	echo "image-reproducible: two builds give $$(cat $(IMAGE_DIGEST_FILE))"

$(OUT)/localenv: $(GO_SOURCES)
	$(GO) build -ldflags '-X github.com/hcpsnap/hcpsnap/e2e/localenv.defaultHostedEtcdVersion=$(HOSTED_ETCD_VERSION_DEFAULT) -X github.com/hcpsnap/hcpsnap/e2e/localenv.defaultMgmtEtcdVersion=$(MGMT_ETCD_VERSION)' -o $@ ./e2e/cmd/localenv

# ---------------------------------------------------------------------------
# Dependencies of the local environment, built once from the module proxy.

.PHONY: deps
deps: check-versions $(foreach v,$(ETCD_VERSIONS),$(BIN)/etcd-$(v)/etcd) $(BIN)/kube-apiserver $(BIN)/minio $(CRDS)/.stamp ## Build both etcd lines, kube, MinIO; extract the CRDs.

# etcd_rule VERSION MODULE: etcd, etcdctl and etcdutl of one etcd line, built
# from the tools module deps/MODULE into .cache/bin/etcd-VERSION/. The server
# binary is named after its package folder; it is renamed last, so that a
# build cut short leaves no etcd that looks complete.
define etcd_rule
$(BIN)/etcd-$(1)/etcd: deps/$(2)/go.mod deps/$(2)/go.sum
	@mkdir -p $$(@D)
	cd deps/$(2) && $$(GO) build -trimpath -o $$(@D)/ go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/etcdutl/v3 go.etcd.io/etcd/server/v3
	mv $$(@D)/server $$@
endef
$(eval $(call etcd_rule,$(ETCD_36_VERSION),etcd36))
$(eval $(call etcd_rule,$(ETCD_35_VERSION),etcd))

# kube's version is in deps/kube/go.mod (check-versions holds it to
# versions.mk), so editing another line of versions.mk rebuilds nothing.
$(BIN)/kube-apiserver: deps/kube/go.mod deps/kube/go.sum
	@mkdir -p $(BIN)
	cd deps/kube && $(GO) build -trimpath -o $(BIN)/ k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
	touch $@

$(BIN)/minio: $(BIN)/.minio-version
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install -trimpath github.com/minio/minio@$(MINIO_VERSION)
	touch $@

# .minio-version records the MinIO version built; it is rewritten (and MinIO
# rebuilt) only when MINIO_VERSION changes. A MinIO built before this record
# existed was built at the same pin: the record is dated as that binary.
$(BIN)/.minio-version: FORCE
	@mkdir -p $(@D)
	@if [ ! -f $@ ] && [ -f $(BIN)/minio ]; then echo '$(MINIO_VERSION)' > $@ && touch -r $(BIN)/minio $@; \
	elif [ "$$(cat $@ 2>/dev/null)" != '$(MINIO_VERSION)' ]; then echo '$(MINIO_VERSION)' > $@; fi

.PHONY: FORCE
FORCE:

$(CRDS)/.stamp: go.mod $(CRDS)/machineconfigs.yaml
	@mkdir -p $(CRDS)
	$(GO) mod download github.com/openshift/hypershift/api
	src=$$($(GO) list -m -f '{{.Dir}}' github.com/openshift/hypershift/api)/hypershift/v1beta1/zz_generated.featuregated-crd-manifests; \
	for crd in hostedclusters hostedcontrolplanes nodepools; do \
	  sed '/feature-gate.release.openshift.io\/:/d' $$src/$$crd.hypershift.openshift.io/AAA_ungated.yaml > $(CRDS)/$$crd.yaml; \
	done
	touch $@

# OpenShift's MachineConfig CRD, for `hcpsnap schedule management --apply`
# against the local apiserver; its version is the openshift/api of go.mod.
# Written beside the HyperShift CRDs (localenv applies every *.yaml there),
# through a temporary file, so that a cut-short extraction leaves none.
MACHINECONFIG_CRD := machineconfiguration/v1/zz_generated.crd-manifests/0000_80_machine-config_01_machineconfigs.crd.yaml
$(CRDS)/machineconfigs.yaml: go.mod
	@mkdir -p $(CRDS)
	$(GO) mod download github.com/openshift/api
	cp "$$($(GO) list -m -f '{{.Dir}}' github.com/openshift/api)/$(MACHINECONFIG_CRD)" $@.tmp
	chmod 0644 $@.tmp
	mv $@.tmp $@

.PHONY: deps-mod
deps-mod: ## Regenerate deps/etcd, deps/etcd36 and deps/kube after changing deps/versions.mk.
	./deps/gen-tools-mod.sh all

.PHONY: check-versions
check-versions: ## Fail when a go.mod disagrees with deps/versions.mk.
	@grep -qE "go.etcd.io/etcd/server/v3 $(ETCD_35_VERSION)( |$$)" deps/etcd/go.mod || { echo "deps/etcd/go.mod is not at ETCD_35_VERSION=$(ETCD_35_VERSION): run 'make deps-mod'"; exit 1; }
	@grep -qE "go.etcd.io/etcd/server/v3 $(ETCD_36_VERSION)( |$$)" deps/etcd36/go.mod || { echo "deps/etcd36/go.mod is not at ETCD_36_VERSION=$(ETCD_36_VERSION): run 'make deps-mod'"; exit 1; }
	@case " $(ETCD_VERSIONS) " in *" $(HOSTED_ETCD_VERSION) "*) ;; *) echo "HOSTED_ETCD_VERSION=$(HOSTED_ETCD_VERSION) is not built here: use one of $(ETCD_VERSIONS)"; exit 2;; esac
	@case " $(ETCD_VERSIONS) " in *" $(MGMT_ETCD_VERSION) "*) ;; *) echo "MGMT_ETCD_VERSION=$(MGMT_ETCD_VERSION) is not built here: use one of $(ETCD_VERSIONS)"; exit 2;; esac
	@grep -qE "k8s.io/kubernetes $(KUBE_VERSION)( |$$)" deps/kube/go.mod || { echo "deps/kube/go.mod is not at KUBE_VERSION=$(KUBE_VERSION): run 'make deps-mod'"; exit 1; }
	@grep -qE "github.com/openshift/hypershift/api $(HYPERSHIFT_API_VERSION)( |$$)" go.mod || { echo "go.mod does not require hypershift/api $(HYPERSHIFT_API_VERSION): run 'go get github.com/openshift/hypershift/api@$(HYPERSHIFT_API_VERSION)'"; exit 1; }

# ---------------------------------------------------------------------------
# The local environment.

.PHONY: env-up
env-up: deps $(OUT)/localenv $(IMAGE_DIGEST_FILE) ## Start the local environment (HOSTED_ETCD_VERSION, ETCD_DATA_MB, ETCD_VOLUME_MB, HOSTED_CLUSTERS=2 for a second HostedCluster) and write .localenv/env.
	$(OUT)/localenv up

# stop_running_env stops an environment left running (by `make demo` or
# `make env-up`), saying so: the tests need a fresh one of their own.
define stop_running_env
if $(OUT)/localenv running 2>/dev/null; then \
  echo "$@: stopping the local environment left running (by 'make demo' or 'make env-up'): the tests start their own"; \
  $(OUT)/localenv down; \
fi
endef

.PHONY: env-down
env-down: $(OUT)/localenv ## Stop the local environment; fail if anything is left behind.
	$(OUT)/localenv down

# ---------------------------------------------------------------------------
# Tests.

.PHONY: test
test: unit fuzz image-reproducible e2e e2e-etcd35 e2e-fleet e2e-shards ## Unit tests, a short fuzz run, the image built twice, e2e on the default etcd (3.6), the round trip on etcd 3.5, fleets on two HostedClusters, a cluster with an etcd shard.

# systemd-analyze checks the units and calendar of `schedule management`
# in the unit tests (they fail without it unless HCPSNAP_SYSTEMD_OPTIONAL is
# set); it comes from Debian's systemd package.
SYSTEMD_ANALYZE ?= /usr/bin/systemd-analyze

$(SYSTEMD_ANALYZE):
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "$@ is missing: install Debian's systemd package (apt-get install systemd), or set HCPSNAP_SYSTEMD_OPTIONAL=1 to skip the tests that need it"; exit 3; fi
	apt-get install -y --no-install-recommends systemd

# shellcheck checks the management snapshot script in the unit tests (they
# fail without it unless HCPSNAP_SHELLCHECK_OPTIONAL is set); Debian's
# shellcheck package.
SHELLCHECK ?= /usr/bin/shellcheck

$(SHELLCHECK):
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "$@ is missing: install Debian's shellcheck package (apt-get install shellcheck), or set HCPSNAP_SHELLCHECK_OPTIONAL=1 to skip the check"; exit 3; fi
	apt-get install -y --no-install-recommends shellcheck || { apt-get update && apt-get install -y --no-install-recommends shellcheck; }

.PHONY: unit
unit: $(SYSTEMD_ANALYZE) $(SHELLCHECK) ## Unit tests (no environment needed; systemd-analyze and shellcheck are installed if missing, and the units are verified when run as root).
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...
	$(GO) test -count=1 ./...

.PHONY: race
race: ## Unit tests under the race detector (slower to build; not part of make test).
	$(GO) test -race -count=1 ./...

.PHONY: fuzz
fuzz: ## Every fuzz target for FUZZTIME each (default 10s).
	./hack/fuzz.sh $(or $(FUZZTIME),10s)

# The packages with tests behind the e2e build tag: the suite on the local
# environment, the etcd fill against real members, the store against MinIO,
# the snapshot scanner against etcdutl of both etcd lines, the etcd client
# against real servers of both lines, the management snapshot script as on a
# master (as root in a mount namespace, against its own etcd), the restore
# drill on snapshots saved by real servers of both etcd lines.
E2E_PACKAGES := ./e2e/ ./e2e/fixture/ ./s3/ ./internal/etcdsnap/ ./internal/etcdclient/ ./management/ ./drill/

.PHONY: e2e
e2e: deps $(OUT)/hcpsnap $(OUT)/localenv $(IMAGE_DIGEST_FILE) ## e2e tests: env up/down twice, then the suite on a fresh environment (etcd HOSTED_ETCD_VERSION).
	@$(stop_running_env)
	ETCD_DATA_MB=1 ./e2e/env-cycle.sh $(OUT)/localenv 2
	$(OUT)/localenv up
	status=0; HCPSNAP_BIN=$(OUT)/hcpsnap HCPSNAP_IMAGE_LAYOUT=$(IMAGE_LAYOUT) $(GO) test -tags e2e -count=1 -timeout 40m -skip '$(FLEET_TESTS)' $(E2E_PACKAGES) || status=$$?; \
	$(OUT)/localenv down || status=$$((status ? status : 1)); exit $$status

# The backup and restore round trip, run again on the 3.5 line.
ROUND_TRIP_TESTS := ^(TestExecReachesOwnEtcdMember|TestKubectlPortForwardReachesEtcdMember|TestBackup|TestBackupOnline|TestRestoreRoundTrip|TestStreamCutIsTakenAgain|TestDrill)$$

.PHONY: e2e-etcd35
e2e-etcd35: deps $(OUT)/hcpsnap $(OUT)/localenv ## The backup/restore round trip on a fresh environment whose hosted etcd is the 3.5 line.
	@$(stop_running_env)
	HOSTED_ETCD_VERSION=$(ETCD_35_VERSION) $(OUT)/localenv up
	status=0; HOSTED_ETCD_VERSION=$(ETCD_35_VERSION) HCPSNAP_BIN=$(OUT)/hcpsnap $(GO) test -tags e2e -count=1 -timeout 20m -run '$(ROUND_TRIP_TESTS)' ./e2e/ || status=$$?; \
	$(OUT)/localenv down || status=$$((status ? status : 1)); exit $$status

# The fleet backups (backup --selector/--all-namespaces), on a fresh
# environment with a second HostedCluster (HOSTED_CLUSTERS=2): the only tests
# that need it, so the others keep their one-cluster environment.
FLEET_TESTS := ^TestFleet

.PHONY: e2e-fleet
e2e-fleet: deps $(OUT)/hcpsnap $(OUT)/localenv ## Fleet backups on a fresh environment with two HostedClusters.
	@$(stop_running_env)
	HOSTED_CLUSTERS=2 $(OUT)/localenv up
	status=0; HCPSNAP_BIN=$(OUT)/hcpsnap $(GO) test -tags e2e -count=1 -timeout 20m -run '$(FLEET_TESTS)' ./e2e/ || status=$$?; \
	$(OUT)/localenv down || status=$$((status ? status : 1)); exit $$status

# HostedClusters with etcd shards, on a fresh environment whose cluster has
# a shard "events" (ETCD_SHARDS=events: one more etcd member, the shards
# schema added to the CRDs). The tests skip on any other environment, so
# `make e2e` runs none of them; `make test` runs this target (about 35 s).
SHARDS_TESTS := ^TestShards

.PHONY: e2e-shards
e2e-shards: deps $(OUT)/hcpsnap $(OUT)/localenv ## etcd shards (backup and drill of every shard, stream refused, --without-shards, restore warnings) on a fresh environment with ETCD_SHARDS=events.
	@$(stop_running_env)
	ETCD_SHARDS=events $(OUT)/localenv up
	status=0; HCPSNAP_BIN=$(OUT)/hcpsnap $(GO) test -tags e2e -count=1 -timeout 20m -run '$(SHARDS_TESTS)' ./e2e/ || status=$$?; \
	$(OUT)/localenv down || status=$$((status ? status : 1)); exit $$status

# ---------------------------------------------------------------------------
# Demo.

.PHONY: demo
demo: deps build $(OUT)/localenv $(IMAGE_DIGEST_FILE) ## Build everything, start the environment (or reuse a running one), run hcpsnap on it.
	@$(OUT)/localenv running 2>/dev/null || $(OUT)/localenv up
	./e2e/demo.sh $(OUT)/hcpsnap $(LOCALENV)/env $(IMAGE_DIGEST_FILE)

.PHONY: fmt
fmt: ## Format the Go sources.
	gofmt -w $$(git ls-files '*.go')

.PHONY: clean
clean: ## Remove built binaries (keeps the dependency cache).
	rm -rf $(OUT)

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

# ---------------------------------------------------------------------------
# Benchmarks (not part of `make test`).

.PHONY: bench
bench: deps $(OUT)/hcpsnap $(OUT)/localenv ## Benchmark backup --via stream and --via exec vs the manual runbook and their paths' limits (BENCH_SIZES="256 1024", BENCH_RUNS=3, BENCH_WAYS="stream exec", BENCH_VOLUME_MB, BENCH_PROFILE=1, BENCH_OUT=bench).
	./e2e/bench/bench.sh $(OUT)/hcpsnap $(OUT)/localenv
