#!/usr/bin/env bash
# Install what the examples need on Debian 12, as root; .ci/run calls this before the
# tests, and a developer may too. Idempotent and quiet: it installs only what is
# missing and prints one line when it did something.
#
#   PHP      php-cli and PDO's pdo_sqlite, pdo_pgsql, pdo_mysql
#   Go       golang-go and the three drivers' sources (built offline: go/build-offline.sh)
#   Java     a JDK, the JDBC drivers and Gson
#   Node.js  pg, mysql2, better-sqlite3 from npm into node/node_modules (npm ci), with the
#            built tree kept in ~/.cache/herald/examples so a fresh clone on the same
#            machine does not compile better-sqlite3's SQLite again (about 2 minutes)
# Python's drivers come with Herald's own requirements.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

APT_PACKAGES=(
    php-cli php-sqlite3 php-pgsql php-mysql
    golang-go golang-github-lib-pq-dev golang-github-go-sql-driver-mysql-dev
    golang-github-mattn-go-sqlite3-dev
    libpostgresql-jdbc-java libmariadb-java libxerial-sqlite-jdbc-java libgoogle-gson-java
)
command -v javac >/dev/null 2>&1 || APT_PACKAGES+=(default-jdk-headless)

done_what=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT

missing=()
for package in "${APT_PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    t0=$SECONDS
    if ! { apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
               -o DPkg::Lock::Timeout=300 "${missing[@]}"; } >"$log" 2>&1; then
        tail -20 "$log" >&2
        echo "examples/install.sh: apt-get install ${missing[*]} failed" >&2
        exit 1
    fi
    done_what+=("apt: ${#missing[@]} packages in $((SECONDS - t0)) s")
fi

# Node.js: better-sqlite3 12 is the line that runs on Node.js 20 (13 needs 22)
node_dir=$here/node
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    # Debian 12's own nodejs is 18, too old for better-sqlite3 12
    echo "examples/install.sh: Node.js 20 or later with npm is not installed" >&2
    exit 1
fi
key=$(cat "$node_dir/package-lock.json" <(node --version) <(uname -m) | sha256sum | cut -c1-16)
stamp=$node_dir/node_modules/.herald-installed
if [[ "$(cat "$stamp" 2>/dev/null)" != "$key" ]]; then
    t0=$SECONDS
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/herald/examples
    tarball=$cache/node_modules-$key.tar
    rm -rf "$node_dir/node_modules"
    if [[ -f "$tarball" ]] && tar -C "$node_dir" -xf "$tarball" 2>/dev/null; then
        how="restored"
    else
        rm -rf "$node_dir/node_modules"
        if ! (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
            tail -20 "$log" >&2
            echo "examples/install.sh: npm ci in examples/node failed" >&2
            exit 1
        fi
        mkdir -p "$cache"
        rm -f "$cache"/node_modules-*.tar  # one tree kept: the current lock's
        tar -C "$node_dir" -cf "$tarball.part" node_modules && mv "$tarball.part" "$tarball"
        how="installed"
    fi
    echo "$key" >"$stamp"
    done_what+=("npm: $how in $((SECONDS - t0)) s")
fi

if ((${#done_what[@]})); then
    echo "examples: toolchains ready ($(IFS=';'; echo "${done_what[*]}" | sed 's/;/; /g'))"
fi
