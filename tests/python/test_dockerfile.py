"""deploy/Dockerfile is checked without a container daemon.

The dependency stage (`FROM ... AS deps`) is replayed as Docker would run
it: every COPY copies exactly the files it names from the repository (the
build context) into a temporary directory, every RUN runs with `sh -c` in
the stage's WORKDIR mapped into that directory, with the ENV and ARG values
of the stage and this machine's CARGO_HOME (so the registry cache is reused
and `cargo fetch --locked` costs seconds). Any failing step fails the test;
so does an instruction the replay cannot reproduce faithfully.

The build stage is checked for what it needs from the workspace: the
binaries its `cargo build` names exist (`cargo metadata --no-deps`), and the
runtime stage copies exactly those. The Rust image is the version of
rust-toolchain.toml, and the build context (Dockerfile.dockerignore) keeps
target/ out but every source in.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"

# What the replay reproduces exactly. Anything else in the deps stage
# (USER, SHELL, ADD, RUN --mount, COPY --from, ...) needs this test taught
# first, or the replay would pass while the image build fails.
REPLAYABLE = {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "ARG"}

STEP_TIMEOUT_S = float(os.environ.get("ADLAKE_TEST_DOCKER_STEP_TIMEOUT", "900"))


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based, where the instruction starts
    keyword: str
    args: str

    def __str__(self) -> str:
        return f"deploy/Dockerfile:{self.line}: {self.keyword} {self.args}"


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined (backslash escape,
    the default); comment and blank lines inside a continuation are dropped,
    as Docker does."""
    out: list[Instruction] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        parts = []
        line = lines[i]
        while True:
            body = line.rstrip()
            if body.endswith("\\"):
                parts.append(body[:-1])
                i += 1
                while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                    i += 1
                if i >= len(lines):
                    break
                line = lines[i]
            else:
                parts.append(body)
                i += 1
                break
        joined = " ".join(p.strip() for p in parts if p.strip())
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(start + 1, keyword.upper(), args.strip()))
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            out.append([ins])
        elif out:
            out[-1].append(ins)
        elif ins.keyword != "ARG":  # ARG may precede the first FROM
            pytest.fail(f"{ins}: instruction before the first FROM")
    return out


def stage_name(stage: list[Instruction]) -> str | None:
    m = re.search(r"\s+AS\s+(\S+)\s*$", stage[0].args, re.IGNORECASE)
    return m[1] if m else None


def split_flags(args: str) -> tuple[list[str], str]:
    """`--flag=value ... rest` -> (flags, rest)."""
    flags = []
    rest = args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.lstrip()
    return flags, rest


def words(rest: str) -> list[str]:
    """The arguments of COPY/ADD in JSON (exec) form or whitespace form."""
    if rest.startswith("["):
        return json.loads(rest)
    return rest.split()


@functools.cache
def metadata() -> dict:
    done = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"cargo metadata failed:\n{done.stderr}"
    return json.loads(done.stdout)


def relative(path: str) -> str:
    return str(Path(path).resolve().relative_to(ROOT.resolve()))


def workspace_bins() -> set[str]:
    return {t["name"] for p in metadata()["packages"] for t in p["targets"] if "bin" in t["kind"]}


@functools.cache
def dockerfile_stages() -> list[list[Instruction]]:
    return stages(parse_dockerfile(DOCKERFILE.read_text()))


def deps_stage() -> list[Instruction]:
    first = dockerfile_stages()[0]
    assert stage_name(first) == "deps", f"{first[0]}: the first stage must be `FROM ... AS deps`"
    return first


def build_stage() -> list[Instruction]:
    found = [s for s in dockerfile_stages() if stage_name(s) == "build"]
    assert found, "deploy/Dockerfile has no `FROM ... AS build` stage"
    return found[0]


# --------------------------------------------------------------------------
# The build context: deploy/Dockerfile.dockerignore
# --------------------------------------------------------------------------


def ignore_patterns() -> list[str]:
    if not DOCKERIGNORE.is_file():
        return []
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line.strip("/"))
    return patterns


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex over context-relative paths: `*`
    and `?` stay inside one path element, `**` spans any number of them."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern excludes the path it matches and everything
    under it; the last matching pattern wins, `!pattern` re-includes."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = pattern_regex(pattern[1:] if negate else pattern)
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negate
    return result


def test_ignore_matcher_follows_docker_rules():
    patterns = ["target", "**/__pycache__", "*.md", "!README.md"]
    assert ignored("target/debug/adlake", patterns)
    assert ignored("tests/python/__pycache__/x.pyc", patterns)
    assert ignored("__pycache__/x.pyc", patterns)
    assert ignored("CHANGES.md", patterns)
    assert not ignored("README.md", patterns)
    assert not ignored("docs/x.md", patterns)  # `*.md` is anchored at the root
    assert not ignored("engine/src/target.rs", patterns)


def test_build_context_keeps_target_out_and_every_source_in():
    patterns = ignore_patterns()
    assert DOCKERIGNORE.is_file(), "deploy/Dockerfile.dockerignore is missing: `COPY . .` would send target/ (GBs)"
    for heavy in ("target/debug/adlake", ".venv/bin/python", "data/warehouse/x"):
        assert ignored(heavy, patterns), f"{heavy} is in the build context"
    needed = ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml"]
    for package in metadata()["packages"]:
        needed.append(relative(package["manifest_path"]))
        needed += [relative(t["src_path"]) for t in package["targets"]]
    needed += [relative(str(p)) for p in (ROOT / "proto").rglob("*.proto")]
    leaked = [p for p in needed if ignored(p, patterns)]
    assert not leaked, f"deploy/Dockerfile.dockerignore keeps sources the build needs out of the context: {leaked}"


# --------------------------------------------------------------------------
# Stage deps, replayed
# --------------------------------------------------------------------------


def test_deps_stage_uses_only_replayable_instructions():
    bad = [str(ins) for ins in deps_stage() if ins.keyword not in REPLAYABLE]
    assert not bad, f"the replay of stage deps cannot reproduce these (teach test_dockerfile.py first): {bad}"
    for ins in deps_stage():
        flags, _ = split_flags(ins.args)
        if ins.keyword in ("COPY", "RUN") and flags:
            pytest.fail(f"{ins}: flags {flags} are not replayed (teach test_dockerfile.py first)")


def test_rust_image_is_the_toolchain_of_rust_toolchain_toml():
    channel = tomllib.loads((ROOT / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    images = [s[0].args.split()[0] for s in dockerfile_stages() if s[0].args.split()[0].startswith("rust:")]
    assert images, "no stage starts from a rust: image"
    for image in images:
        tag = image.split(":", 1)[1]
        assert tag == channel or tag.startswith(f"{channel}-"), (
            f"{image}: not rust-toolchain.toml's channel {channel}, so rustup in the image may install another toolchain"
        )


def host_path(root: Path, workdir: PurePosixPath, path: str) -> Path:
    p = workdir / path if not path.startswith("/") else PurePosixPath(path)
    return root / str(p).lstrip("/")


def replay_copy(ins: Instruction, root: Path, workdir: PurePosixPath, copied: list[str]) -> None:
    _, rest = split_flags(ins.args)
    args = words(rest)
    assert len(args) >= 2, f"{ins}: COPY needs a source and a destination"
    *sources, dest = args
    matched: list[Path] = []
    for src in sources:
        hits = sorted(glob.glob(src, root_dir=ROOT)) if any(c in src for c in "*?[") else [src]
        hits = [h for h in hits if (ROOT / h).exists()]
        assert hits, f"{ins}: {src} does not exist in the build context"
        matched += [ROOT / h for h in hits]
    target = host_path(root, workdir, dest)
    into_dir = dest.endswith("/") or len(matched) > 1 or dest in (".", "./")
    for src in matched:
        rel = relative(str(src))
        if ignored(rel, ignore_patterns()):
            pytest.fail(f"{ins}: {rel} is excluded from the build context by deploy/Dockerfile.dockerignore")
        if src.is_dir():
            # COPY of a directory copies its contents.
            shutil.copytree(src, target, dirs_exist_ok=True)
            copied += [relative(str(p)) for p in src.rglob("*") if p.is_file()]
        else:
            out = target / src.name if into_dir else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
            copied.append(rel)


def run_env(env_values: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # The image's CARGO_HOME is /usr/local/cargo; here it is this machine's,
    # so the registry cache is shared and the fetch is fast.
    env.update({k: v for k, v in env_values.items() if k not in ("CARGO_HOME", "RUSTUP_HOME", "PATH")})
    # A target dir set for the repository must not send the replay there.
    env.pop("CARGO_TARGET_DIR", None)
    return env


def test_deps_stage_replays_without_docker(tmp_path: Path):
    """Runs stage deps as `docker build` would, in a temporary directory."""
    test_deps_stage_uses_only_replayable_instructions()
    root = tmp_path / "image"
    root.mkdir()
    workdir = PurePosixPath("/")
    env_values: dict[str, str] = {}
    copied: list[str] = []
    log = []
    for ins in deps_stage()[1:]:
        if ins.keyword == "WORKDIR":
            workdir = workdir / ins.args  # an absolute path replaces
            host_path(root, workdir, ".").mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "ENV":
            if "=" in ins.args.split()[0]:
                for pair in shlex.split(ins.args):
                    key, _, value = pair.partition("=")
                    env_values[key] = value
            else:
                key, _, value = ins.args.partition(" ")
                env_values[key] = value.strip()
        elif ins.keyword == "ARG":
            name, eq, default = ins.args.partition("=")
            if eq and name not in env_values:
                env_values[name] = default
        elif ins.keyword == "COPY":
            replay_copy(ins, root, workdir, copied)
        elif ins.keyword == "RUN":
            _, command = split_flags(ins.args)
            argv = json.loads(command) if command.startswith("[") else ["sh", "-c", command]
            cwd = host_path(root, workdir, ".")
            cwd.mkdir(parents=True, exist_ok=True)
            try:
                done = subprocess.run(
                    argv,
                    cwd=cwd,
                    env=run_env(env_values),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=STEP_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"{ins}\ndid not finish in {STEP_TIMEOUT_S:.0f}s")
            log.append(f"{ins}\n  exit {done.returncode}")
            if done.returncode != 0:
                pytest.fail(
                    f"{ins}\nexited with {done.returncode} in the replay of stage deps (in {cwd}):\n"
                    f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-6000:]}",
                    pytrace=False,
                )
    assert any(ins.keyword == "RUN" and "cargo fetch" in ins.args for ins in deps_stage()), (
        "stage deps no longer runs `cargo fetch`: what is it for?"
    )

    # Every manifest of the workspace was copied (a new crate's would be
    # missing), and the stage left a file at every target path the
    # manifests need to parse, so the stub list cannot fall behind.
    src = host_path(root, workdir, ".")
    manifests = {"Cargo.toml", "Cargo.lock"} | {relative(p["manifest_path"]) for p in metadata()["packages"]}
    missing = sorted(m for m in manifests if m not in copied)
    assert not missing, f"stage deps does not copy {missing}"
    declared_tests = set()
    for package in metadata()["packages"]:
        manifest = Path(package["manifest_path"])
        for kind in ("test", "bench", "example"):
            for t in tomllib.loads(manifest.read_text()).get(kind, []):
                declared_tests.add((relative(str(manifest.parent)), t["name"]))
    needed = []
    for package in metadata()["packages"]:
        pkg_dir = relative(str(Path(package["manifest_path"]).parent))
        for t in package["targets"]:
            declared = (pkg_dir, t["name"]) in declared_tests
            if set(t["kind"]) & {"lib", "rlib", "bin", "bench", "proc-macro"} or declared:
                needed.append(relative(t["src_path"]))
    unstubbed = sorted(p for p in needed if not (src / p).is_file())
    assert not unstubbed, f"stage deps creates no file at these target paths: {unstubbed}"
    # No stub survives into the build stage: each is a real file there.
    ghost = sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.rs")
        if not (ROOT / p.relative_to(src)).is_file()
    )
    assert not ghost, f"stage deps creates sources the repository does not have (they would survive `COPY . .`): {ghost}"


# --------------------------------------------------------------------------
# Stages build and runtime
# --------------------------------------------------------------------------


def cargo_build_bins() -> tuple[Instruction, list[str]]:
    runs = [ins for ins in build_stage() if ins.keyword == "RUN" and "cargo build" in ins.args]
    assert len(runs) == 1, f"stage build should run `cargo build` once: {runs}"
    ins = runs[0]
    _, command = split_flags(ins.args)
    build = command.split("cargo build", 1)[1].split("&&", 1)[0]
    bins = re.findall(r"--bin[ =](\S+)", build)
    assert bins, f"{ins}: names no --bin"
    for flag in ("--release", "--locked"):
        assert flag in build, f"{ins}: {flag} missing"
    return ins, bins


def test_build_stage_builds_workspace_binaries_from_the_whole_context():
    stage = build_stage()
    assert stage[0].args.split()[0] == "deps", f"{stage[0]}: stage build should start from stage deps"
    ins, bins = cargo_build_bins()
    unknown = sorted(set(bins) - workspace_bins())
    assert not unknown, f"{ins}: no such binaries in the workspace: {unknown} (have {sorted(workspace_bins())})"
    copies = [i for i in stage if i.keyword == "COPY"]
    assert copies and words(split_flags(copies[0].args)[1]) == [".", "."], (
        "stage build should `COPY . .` (the real sources over the stubs of stage deps)"
    )
    assert stage.index(copies[0]) < stage.index(ins), "COPY . . must come before cargo build"
    for name in bins:
        assert f"target/release/{name}" in ins.args, f"{ins}: target/release/{name} is not installed into /out"


def test_runtime_stage_ships_what_the_build_stage_built():
    _, bins = cargo_build_bins()
    runtime = dockerfile_stages()[-1]
    copied = []
    for ins in runtime:
        flags, rest = split_flags(ins.args)
        if ins.keyword == "COPY" and "--from=build" in flags:
            copied += [PurePosixPath(w).name for w in words(rest)[:-1]]
    assert sorted(copied) == sorted(bins), f"runtime stage copies {copied}, stage build builds {bins}"
    entry = [i for i in runtime if i.keyword == "ENTRYPOINT"]
    assert entry, "runtime stage has no ENTRYPOINT"
    assert words(entry[-1].args)[0] in bins, entry[-1]
