#!/usr/bin/env bash
# Builds the real Kubernetes API server (kube-apiserver) from the Go module
# proxy into DIR (default: $XDG_CACHE_HOME/basalt-kube or ~/.cache/basalt-kube)
# for tests/kubeapiserver, and prints the binary's path.
#
# kube-apiserver cannot be `go install`ed: k8s.io/kubernetes replaces its
# staging modules (k8s.io/api, k8s.io/apiserver, ...) with local paths that
# are not in its module zip. So, as for etcd (scripts/build-etcd.sh), a tiny
# module's main calls the real entry point, and replace lines pin every
# staging module that k8s.io/kubernetes's go.mod replaces to the matching
# published version (v1.X.Y -> v0.X.Y). The list is read from that go.mod, so
# it follows a version bump. Nothing is downloaded from anywhere but the
# module proxy. Idempotent: a binary already built is kept.
set -euo pipefail
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
dir=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/basalt-kube}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
bin="$dir/kube-apiserver-$KUBE_VERSION"

if [ ! -x "$bin" ]; then
	src="$dir/src/kube-apiserver"
	rm -rf "$src"
	mkdir -p "$src"
	# cmd/kube-apiserver/apiserver.go of the same version, verbatim but
	# for the package comment.
	cat >"$src/main.go" <<'GO'
package main

import (
	"os"
	_ "time/tzdata" // for timeZone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
GO
	cd "$src"
	go mod init basalt.local/kube-apiserver >/dev/null 2>&1
	gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[ -f "$gomod" ] || { echo "build-kube-apiserver: no go.mod for k8s.io/kubernetes@$KUBE_VERSION" >&2; exit 1; }
	staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\1#p' "$gomod")
	[ -n "$staging" ] || { echo "build-kube-apiserver: no staging replaces in $gomod" >&2; exit 1; }
	edits=(-require "k8s.io/kubernetes@$KUBE_VERSION")
	for m in $staging; do
		edits+=(-replace "$m=$m@$STAGING_VERSION")
	done
	go mod edit "${edits[@]}"
	go mod tidy >/dev/null
	# The version stamps hack/lib/version.sh sets, so the server reports
	# its real version (/version, the etcd storage's version checks).
	minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" .
	mv "$bin.tmp" "$bin"
fi
echo "$bin"
