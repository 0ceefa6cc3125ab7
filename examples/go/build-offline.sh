#!/bin/sh
# Build this example with no module proxy, on Debian 12, from Debian's driver sources:
#   apt-get install golang-go golang-github-lib-pq-dev \
#       golang-github-go-sql-driver-mysql-dev golang-github-mattn-go-sqlite3-dev
# A copy of go.mod replaces each required module by its folder under /usr/share/gocode/src
# (go build -modfile); go.mod itself stays as an application with a proxy uses it.
# Usage: sh build-offline.sh [OUTPUT]   (default: ./herald-example)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/herald-example}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
gocode=/usr/share/gocode/src
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$here"
cp go.mod "$tmp/debian.mod"
for module in $(sed -n 's/^[[:space:]]*\(github\.com\/[^[:space:]]*\) v.*/\1/p' go.mod); do
    if [ ! -f "$gocode/$module/go.mod" ]; then
        echo "build-offline.sh: $gocode/$module missing: install its golang-*-dev package" >&2
        exit 1
    fi
    go mod edit -modfile="$tmp/debian.mod" -replace="$module=$gocode/$module"
done
GOPROXY=off GOFLAGS=-mod=mod go build -modfile="$tmp/debian.mod" -o "$out" .
