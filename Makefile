# Basalt. `make test` is what CI runs (.ci/run); `make proto` regenerates the
# committed protobuf code with Debian's protoc and the plugins pinned in go.mod.
SHELL := /bin/bash
GO ?= go
RAFT_PROTO_DIR = $(shell $(GO) list -m -f '{{.Dir}}' go.etcd.io/raft/v3)/raftpb
PROTOS = proto/metapb/metapb.proto proto/errorpb/errorpb.proto \
	proto/raftcmdpb/raftcmdpb.proto proto/raftserverpb/raftserverpb.proto proto/pdpb/pdpb.proto proto/kvpb/kvpb.proto
RACE_PKGS = ./region/... ./raftstore/... ./pd/... ./client/... ./internal/forward/...

.PHONY: all build test test-short race vet fmt-check proto proto-check deps bench tools bench-vs-etcd robustness kube-apiserver

all: build

build:
	$(GO) build ./...

bin/protoc-gen-go bin/protoc-gen-go-grpc: go.mod
	@mkdir -p bin
	$(GO) build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o bin/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc

# deps installs what the build and tests need that Go modules do not bring.
deps:
	@./scripts/install-deps.sh

proto: deps bin/protoc-gen-go bin/protoc-gen-go-grpc
	protoc -I proto -I $(RAFT_PROTO_DIR) \
		--plugin=protoc-gen-go=bin/protoc-gen-go --plugin=protoc-gen-go-grpc=bin/protoc-gen-go-grpc \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$(PROTOS)

# proto-check fails when the committed generated code is stale.
proto-check: proto
	@git diff --exit-code -- proto || { echo "generated protobuf code is stale: run 'make proto' and commit"; exit 1; }

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

race:
	$(GO) test -race -tags invariants -count=1 $(RACE_PKGS)

# kube-apiserver builds the Kubernetes API server that tests/kubeapiserver
# runs against Basalt (scripts/build-kube-apiserver.sh; cached, about ten
# minutes on 2 cores the first time), before the tests, so the build is not
# charged to that package's test timeout.
kube-apiserver:
	@./scripts/build-kube-apiserver.sh

# One package at a time: the integration, robustness and compose tests each
# run clusters of real processes, and on 2 cores they starved each other
# into timeouts when run side by side.
test-short: kube-apiserver
	$(GO) test -p 1 -tags invariants -count=1 ./...

# test: everything CI checks.
test: fmt-check vet build proto-check test-short race

bench:
	$(GO) test -run '^$$' -bench . -benchtime 5s ./raftstore/

# bench-vs-etcd: etcd's benchmark tool against a 3-member etcd 3.7 and a
# Basalt cluster, alternating, 3 rounds; appends the table to
# docs/benchmarks.md (tests/bench).
bench-vs-etcd:
	$(GO) run ./tests/bench -rounds 3 -write

# robustness: the randomized fault suite, RUNS runs of DURATION each
# (tests/robustness, docs/robustness.md); SEED=... replays one schedule;
# TEST=TestRobustnessFullPartitions runs the network-namespace variant
# (full partitions) instead of TestRobustness, TEST=TestRobustnessInProcessCrash
# the in-process one whose stores crash losing unsynced data. test-short
# runs one 20 s run of each.
RUNS ?= 10
DURATION ?= 30s
TEST ?= TestRobustness
robustness:
	TEST=$(TEST) ./scripts/robustness.sh $(RUNS) $(DURATION)
