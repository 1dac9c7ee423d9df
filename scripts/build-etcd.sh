#!/usr/bin/env bash
# Builds etcd 3.7 (server), etcdctl, and etcd's benchmark tool (from the
# newest v3.6 root module the proxy serves) from the Go module proxy into DIR
# (default: $XDG_CACHE_HOME/basalt-etcd or ~/.cache/basalt-etcd), for the
# compatibility tests and the benchmarks against etcd. Each is a tiny module
# calling etcd's own entry point (`go install` refuses etcd's modules
# because of their replace directives). Nothing is downloaded from anywhere
# but the module proxy. Idempotent: binaries already built are kept.
set -euo pipefail
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
BENCHMARK_VERSION=${BENCHMARK_VERSION:-v3.6.8}
dir=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/basalt-etcd}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

build() { # name module main-body [version]
	local name=$1 module=$2 body=$3 version=${4:-$ETCD_VERSION}
	[ -x "$dir/$name-$version" ] && return 0
	local src="$dir/src/$name"
	rm -rf "$src"
	mkdir -p "$src"
	cat >"$src/main.go" <<GO
package main

$body
GO
	(cd "$src" && go mod init "basalt.local/$name" >/dev/null 2>&1 &&
		go get "$module@$version" >/dev/null 2>&1 &&
		go mod tidy >/dev/null 2>&1 &&
		CGO_ENABLED=0 go build -o "$dir/$name-$version" .)
}

build etcd go.etcd.io/etcd/server/v3 'import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }'

build etcdctl go.etcd.io/etcd/etcdctl/v3 'import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }'

if [ "${WITH_BENCHMARK:-}" = 1 ]; then
	build benchmark go.etcd.io/etcd/v3 'import (
	"fmt"
	"os"

	"go.etcd.io/etcd/v3/tools/benchmark/cmd"
)

func main() {
	if err := cmd.RootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}' "$BENCHMARK_VERSION"
fi

echo "$dir/etcd-$ETCD_VERSION"
echo "$dir/etcdctl-$ETCD_VERSION"
if [ "${WITH_BENCHMARK:-}" = 1 ]; then
	echo "$dir/benchmark-$BENCHMARK_VERSION"
fi
