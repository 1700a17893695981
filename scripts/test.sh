#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# Usage: ./scripts/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's start in wall time and in the CPU time used so far by everything this script ran
# (user and system; it does not grow when the machine is busy with other work), so a slow CI
# run shows where its time went.
START=$SECONDS
TIMES=$(mktemp)
trap 'rm -f "$TIMES" "${PBTS_SKIP_LOG:-}"' EXIT
step() {
    times >"$TIMES" # in this shell: a command substitution would time only its own subshell
    echo "== [$((SECONDS - START)) s wall, cpu user/sys $(tail -1 "$TIMES")] $*"
}

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Debian packages: real BitTorrent clients for the end-to-end tests (aria2c, python3-libtorrent),
# LaTeX for the experiments' tables, systemd-analyze and strace for the systemd unit's test,
# Docker and debootstrap for the container test.
step "system packages"
need_apt=()
command -v aria2c >/dev/null 2>&1 || need_apt+=(aria2)
/usr/bin/python3 -c 'import libtorrent' >/dev/null 2>&1 || need_apt+=(python3-libtorrent)
# pdflatex with booktabs, for the experiments' LaTeX tables.
command -v pdflatex >/dev/null 2>&1 || need_apt+=(texlive-latex-base)
command -v kpsewhich >/dev/null 2>&1 && kpsewhich booktabs.sty >/dev/null 2>&1 || need_apt+=(texlive-latex-recommended)
# systemd-analyze (verifies deploy/systemd/pbts.service and expands its syscall filter) and
# strace (the calls pbts makes, checked against that filter).
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
# The container test (engine/tests/containers.rs): a Docker daemon it starts itself, and
# debootstrap for its base image (no image registry is reachable here).
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Prometheus and promtool: the example configuration and alert rules run against a live
# tracker (the node exporter it recommends is not needed).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "installing: prometheus"
    [ ${#need_apt[@]} -gt 0 ] || $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# `docker compose` (v2) for compose.yaml. Debian bookworm packages only compose 1.29; trixie's
# docker-compose 2.x is a static binary that installs on bookworm, so it is fetched from there
# (signed by the same archive keyring) when this release has no 2.x.
if ! /usr/bin/docker compose version >/dev/null 2>&1; then
    compose_version=$(apt-cache policy docker-compose | awk '/Candidate:/ {print $2}')
    if [ "${compose_version%%.*}" -ge 2 ] 2>/dev/null; then
        echo "installing: docker-compose $compose_version"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker-compose >/dev/null
    else
        echo "installing: docker-compose 2.x from Debian trixie"
        trixie=$(mktemp -d)
        mkdir -p "$trixie/lists/partial" "$trixie/cache/archives/partial"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$trixie/sources.list"
        apt_trixie=(-o "Dir::Etc::SourceList=$trixie/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$trixie/lists" -o "Dir::Cache=$trixie/cache" -o APT::Sandbox::User=root)
        $SUDO apt-get "${apt_trixie[@]}" update -qq
        (cd "$trixie" && $SUDO apt-get "${apt_trixie[@]}" download -qq docker-compose)
        DEBIAN_FRONTEND=noninteractive $SUDO dpkg -i "$trixie"/docker-compose_*.deb >/dev/null
        rm -rf "$trixie"
    fi
    /usr/bin/docker compose version
fi

step "python packages"
# py_ecc (PyPI): a second implementation of the BLS ciphersuite, for the verifier's interop test.
if ! python3 -c 'import py_ecc' >/dev/null 2>&1; then
    echo "installing: py_ecc (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check py_ecc
fi

step "npm packages and contract artifacts"
# The dev chain (anvil) and the Solidity compiler (solc-js) from npm, pinned by
# chain/package-lock.json; then the committed contract artifacts must match a fresh compile.
if [ ! -x chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] || [ ! -d chain/node_modules/solc ]; then
    echo "installing: chain/ npm packages (solc, @foundry-rs/anvil)"
    npm ci --prefix chain --no-audit --no-fund --loglevel=error
fi
node chain/scripts/compile.mjs --check

step "dependency rules"
# The pure crates pull in no runtime and no database (docs/ARCHITECTURE.md).
for crate in pbts-proto pbts-http pbts-verifier; do
    heavy=$(cargo tree -p "$crate" -e normal --prefix none --format '{p}' |
        grep -E '^(glommio|tokio|async-std|redb|alloy|dcap-qvl|reqwest) ' || true)
    if [ -n "$heavy" ]; then
        echo "$crate must stay pure, but depends on:" >&2
        echo "$heavy" >&2
        exit 1
    fi
done

# No module imports a module that imports it back, in any crate.
python3 scripts/module_cycles.py proto http verifier tee chain engine testkit benches experiments peer

# One target dir, one build of the tests; formatting and lints first (cheap, fail fast).
step "fmt"
cargo fmt --all --check
step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "test build"
cargo test --workspace --all-targets --no-run --quiet
step "test run"
# A test that cannot run here (no Docker daemon, no ptrace) says why in this file; it is
# printed at the end, since cargo hides a passing test's output.
PBTS_SKIP_LOG=$(mktemp)
export PBTS_SKIP_LOG
cargo test --workspace --no-fail-fast
# Every bench runs once in criterion's test mode, in the test build's profile: they compile,
# link and work, for a minute instead of a release (LTO) build of the workspace. Timing them is
# `cargo bench` by hand or the experiments harness.
step "bench smoke run"
cargo test --workspace --bench '*' --quiet
if [ -s "$PBTS_SKIP_LOG" ]; then
    echo "== skipped on this machine:"
    sed 's/^/   /' "$PBTS_SKIP_LOG"
fi
rm -f "$PBTS_SKIP_LOG"
step "done"
