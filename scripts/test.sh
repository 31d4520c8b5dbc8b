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

# promtool checks and unit-tests deploy/prometheus (tests/python/test_deploy.py).
# It comes from Debian's `prometheus` package, unpacked under target/ rather
# than installed (that would also set up a Prometheus service).
promtool="$(command -v promtool || true)"
if [[ -z "$promtool" ]]; then
    promtool_dir="$(cd "$target_dir" && pwd)/promtool"
    promtool="$promtool_dir/usr/bin/promtool"
    if [[ ! -x "$promtool" ]]; then
        step "promtool (Debian package prometheus, unpacked into $promtool_dir)"
        mkdir -p "$promtool_dir"
        (cd "$promtool_dir" && { apt-get download prometheus >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get download prometheus; }; } &&
            dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb)
    fi
fi

step "pytest tests/python (ADLAKE_BIN_DIR=$bin_dir)"
PROMTOOL="$promtool" ADLAKE_BIN_DIR="$bin_dir" PYTHONDONTWRITEBYTECODE=1 \
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
