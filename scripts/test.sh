#!/usr/bin/env bash
# Runs every test of the workspace, the way CI does (`.ci/run` calls this):
#
#   bash scripts/test.sh                  fmt, clippy, build, Rust tests, Python interop tests
#   bash scripts/test.sh --python-only    build the binaries, then only the Python interop tests
#   bash scripts/test.sh -- -k tenancy    anything after `--` goes to pytest
#
# Needs: the Rust toolchain of rust-toolchain.toml, python3 (3.11) with venv and
# pip, Node.js and npm, and access to PyPI and npm on the first run. The Python
# clients live in .venv, installed from tests/requirements.txt and reinstalled
# only when that file (or the Python interpreter) changes; the az:// tests
# install Azurite (pinned in tests/azurite) under target/azurite themselves.
# cargo-nextest is used when installed, `cargo test` otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root="$PWD"

python_only=0
pytest_args=()
while (($#)); do
    case "$1" in
        --python-only) python_only=1 ;;
        --) shift; pytest_args=("$@"); break ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

started=$SECONDS
step() {
    printf '\n==> %s  [%ss]\n' "$*" "$((SECONDS - started))"
}

# ---------------------------------------------------------------- Python env
python="${PYTHON:-python3}"
venv="$repo_root/.venv"
requirements="$repo_root/tests/requirements.txt"
stamp="$venv/.requirements.stamp"

step "Python environment (.venv from tests/requirements.txt)"
if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    # Missing, or made by an interpreter that is gone.
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
want_stamp="$(
    {
        sha256sum "$requirements"
        "$venv/bin/python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want_stamp" ]]; then
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r "$requirements"
    echo "$want_stamp" >"$stamp"
    echo "installed tests/requirements.txt into .venv"
else
    echo ".venv is up to date with tests/requirements.txt"
fi

# ---------------------------------------------------------------- Rust
if ((!python_only)); then
    step "cargo fmt --all -- --check"
    cargo fmt --all -- --check

    step "cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
fi

# `--tests` as well: with dev-dependencies in the build, cargo resolves the
# same features the test run needs, so nextest reuses this build. A plain
# `--bins` build resolves fewer features and compiles ~100 crates (Arrow,
# DataFusion, delta-rs among them) a second time: twice the minutes and the
# disk.
step "cargo build --workspace --bins --tests"
cargo build --workspace --bins --tests

# `cargo run` from the root, as the README's first command, must start the
# service: the workspace's default member (flight-server) and its
# `default-run` binary (adlake). Without them cargo refuses to guess and a
# fresh clone cannot follow the README. tests/python/test_readme.py replays
# the rest of that command (the demo start) with the binary built above.
step "cargo run -- --version (the root's default binary is adlake)"
adlake_pkgid="$(cargo pkgid -p adlake-server)"
want_version="adlake ${adlake_pkgid##*@}"
got_version="$(cargo run -- --version)"
if [[ "$got_version" != "$want_version" ]]; then
    echo "cargo run -- --version printed '$got_version', want '$want_version'" >&2
    exit 1
fi
echo "$got_version"

if ((!python_only)); then
    if cargo nextest --version >/dev/null 2>&1; then
        step "cargo nextest run --workspace"
        cargo nextest run --workspace --no-fail-fast
        # nextest does not run doctests.
        step "cargo test --workspace --doc"
        cargo test --workspace --doc
    else
        step "cargo test --workspace (cargo-nextest not installed)"
        cargo test --workspace --no-fail-fast
    fi
fi

# ---------------------------------------------------------------- Python tests
target_dir="${CARGO_TARGET_DIR:-target}"
bin_dir="$(cd "$target_dir" && pwd)/debug"

# Prometheus' tools for deploy/: promtool checks and unit-tests the rules,
# amtool the Alertmanager config (tests/python/test_deploy.py), and the real
# prometheus and alertmanager deliver alerts end to end
# (tests/python/test_alerting.py). They come from Debian's `prometheus` and
# `prometheus-alertmanager` packages, unpacked under target/ rather than
# installed (that would also set up and start their services); `apt-get
# update` only when a download fails (no package list yet, or an old one).
prom_dir="$(cd "$target_dir" && pwd)/promtool"
unpack_deb() { # unpack_deb PACKAGE: into $prom_dir
    step "$1 (Debian package, unpacked into $prom_dir)"
    mkdir -p "$prom_dir"
    (cd "$prom_dir" && { apt-get download "$1" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get download "$1"; }; } &&
        dpkg-deb -x "$1"_*.deb . && rm -f "$1"_*.deb)
}
promtool="$(command -v promtool || true)"
prometheus="$(command -v prometheus || true)"
if [[ -z "$promtool" || -z "$prometheus" ]]; then
    promtool="$prom_dir/usr/bin/promtool"
    prometheus="$prom_dir/usr/bin/prometheus"
    [[ -x "$promtool" && -x "$prometheus" ]] || unpack_deb prometheus
fi
alertmanager="$(command -v alertmanager || command -v prometheus-alertmanager || true)"
amtool="$(command -v amtool || true)"
if [[ -z "$alertmanager" || -z "$amtool" ]]; then
    # Debian names the server prometheus-alertmanager.
    alertmanager="$prom_dir/usr/bin/prometheus-alertmanager"
    amtool="$prom_dir/usr/bin/amtool"
    [[ -x "$alertmanager" && -x "$amtool" ]] || unpack_deb prometheus-alertmanager
    # Debian's alertmanager reads its notification templates from a path
    # built into it, and stops without them: put the package's there (the
    # only file written outside the work tree; as root, as CI runs).
    am_templates=/usr/share/prometheus/alertmanager
    if [[ ! -f "$am_templates/default.tmpl" ]]; then
        install -D -m 644 -t "$am_templates" "$prom_dir$am_templates"/*.tmpl ||
            echo "cannot write $am_templates: tests/python/test_alerting.py will fail" >&2
    fi
fi

step "pytest tests/python (ADLAKE_BIN_DIR=$bin_dir)"
PROMTOOL="$promtool" PROMETHEUS="$prometheus" ALERTMANAGER="$alertmanager" AMTOOL="$amtool" \
    ADLAKE_BIN_DIR="$bin_dir" PYTHONDONTWRITEBYTECODE=1 \
    "$venv/bin/python" -m pytest -q tests/python "${pytest_args[@]}"

# ---------------------------------------------------------------- Benchmark answers
if ((!python_only)); then
    # The dashboard workload once against the real server, every answer
    # checked equal to DuckDB's (and the row counts of the Rust client,
    # adlake-load), so the benchmark cannot rot. No timings: those live in
    # benches/README.md. Dataset `small` (50 clients, 365 days, 1M ad rows,
    # 6M rows in all): ~8 min of debug ingest, ~10 min in all.
    step "benchmark workload answers equal DuckDB's (small dataset, debug binaries)"
    PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" benches/harness/run.py --dataset small --check-only \
        --rust-client --bin-dir "$bin_dir" --work-dir "$(cd "$target_dir" && pwd)/bench-data" \
        --out-dir "$(cd "$target_dir" && pwd)/bench-reports"
fi

step "all tests passed"
