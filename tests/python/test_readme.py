"""README.md is a test script: a newcomer follows it top to bottom, so every
command in it must work.

Every command of its shell blocks (```sh, ```bash, ```console, ...) is
either run here or named in COMMANDS with the scripts/test.sh step that runs
it; a command that is neither fails ("add it to the list or run it"), and so
does a list entry the README no longer has. The demo start is replayed as on
a fresh clone: the real `adlake` (debug build, ADLAKE_BIN_DIR) with no
arguments but free ports, in an empty directory; it must seed
./data/warehouse, write ./data/demo-tokens.toml and print what the README
shows, and the README's Python snippet, with the printed address and token,
must return rows through ADBC. The README's auth file starts the server too.

Every flag and environment variable the README names is checked against
the `--help` of the binary (or `adlake-ingest` subcommand) it names.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from support import (
    INGEST_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
    Server,
    adbc_db_kwargs,
    binary,
    launch_adlake,
    query,
    tail,
)

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TEST_SH = ROOT / "scripts" / "test.sh"

SHELL_LANGS = {"sh", "bash", "shell", "console", "zsh", "shell-session"}
# Blocks that are not commands, and what checks them.
OTHER_LANGS = {
    "python": "test_demo_start_as_the_readme_says runs it with the printed address and token",
    "text": "test_demo_start_as_the_readme_says: the demo prints these lines",
    "toml": "test_demo_start_as_the_readme_says starts the server with it as --auth-file",
    "sql": "test_demo_start_as_the_readme_says runs every statement against the demo",
}

# Platforms adlake has connectors for (the demo generates only these).
AD_PLATFORMS = {"google_ads", "meta_ads", "tiktok_ads", "linkedin_ads"}

# Every command of the README's shell blocks and what runs it: a test of this
# file (run here, as written), or a step of scripts/test.sh together with a
# pattern of that step's code which must still be in scripts/test.sh.
COMMANDS: dict[str, tuple[str, str | None]] = {
    "cargo run --release": (
        "scripts/test.sh step `cargo run -- --version` (from the root, after the test build: the "
        "workspace's default binary is adlake) and test_demo_start_as_the_readme_says (that binary, "
        "debug build, with no arguments but free ports, in an empty directory)",
        r"cargo run\b[^\n]*-- --version",
    ),
    "python3 -m venv .venv": (
        "scripts/test.sh step `Python environment`",
        r'-m venv "\$venv"',
    ),
    ".venv/bin/pip install -r tests/requirements.txt": (
        "scripts/test.sh step `Python environment` (requirements=tests/requirements.txt)",
        r'pip install [^\n]*-r "\$requirements"',
    ),
    ".venv/bin/python query.py": ("test_demo_start_as_the_readme_says", None),
    'echo -n "$TOKEN" | sha256sum': ("test_token_hash_command", None),
    "cargo run --release -- --auth-file auth.toml": (
        "test_demo_start_as_the_readme_says (the same binary as `cargo run --release`, debug build, "
        "with --auth-file auth.toml: the README's auth file)",
        None,
    ),
    "bash scripts/test.sh": ("the run itself: this file is one of its pytest steps", r"pytest -q tests/python"),
    "bash scripts/test.sh --help": ("test_test_script_help", None),
}

# Flags named in the README's prose that are not adlake's own.
FOREIGN_FLAGS = {"--release", "--check", "--version", "--help", "--workspace", "--complete"}

FENCE = re.compile(r"^(?P<indent> {0,3})```(?P<lang>[\w+-]*)\s*$")


# --------------------------------------------------------------------------
# Reading the README
# --------------------------------------------------------------------------


@dataclass
class Block:
    lang: str
    line: int  # of the opening fence, 1-based
    text: str


def readme_text() -> str:
    return README.read_text()


def blocks() -> list[Block]:
    out: list[Block] = []
    current: Block | None = None
    body: list[str] = []
    for n, line in enumerate(readme_text().splitlines(), 1):
        m = FENCE.match(line)
        if current is None:
            if m:
                current = Block(m["lang"].lower(), n, "")
                body = []
        elif line.strip() == "```":
            current.text = "\n".join(body) + "\n"
            out.append(current)
            current = None
        else:
            body.append(line)
    assert current is None, f"README.md:{current.line}: unclosed code block"
    return out


def blocks_of(lang: str) -> list[Block]:
    return [b for b in blocks() if b.lang == lang]


def strip_comment(line: str) -> str:
    """A command line without its trailing `# comment` (outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands() -> list[tuple[int, str]]:
    """(README line, command) of every shell block, one command a line."""
    out = []
    for block in blocks():
        if block.lang not in SHELL_LANGS:
            continue
        for offset, line in enumerate(block.text.splitlines(), 1):
            if block.lang in ("console", "shell-session"):
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            command = " ".join(strip_comment(line).split())
            if command:
                out.append((block.line + offset, command))
    return out


def inline_code(text: str) -> list[str]:
    """Inline code spans of `text` (fenced blocks removed first)."""
    without_blocks = re.sub(r"^ {0,3}```.*?^ {0,3}```\s*$", "", text, flags=re.S | re.M)
    return [" ".join(s.split()) for s in re.findall(r"`([^`\n]+(?:\n[^`\n]+)*)`", without_blocks)]


def table_rows(heading: str) -> list[list[str]]:
    """The body rows of the first table under `heading`, as cells."""
    text = readme_text()
    start = text.index(heading)
    rows = []
    in_table = False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            in_table = True
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if set("".join(cells)) <= set("-:| "):
                continue
            rows.append(cells)
        elif in_table:
            break
        elif line.startswith("#"):
            break
    assert len(rows) > 1, f"no table under {heading!r} in README.md"
    return rows[1:]  # without the header


def test_every_code_block_is_known():
    for block in blocks():
        assert block.lang, f"README.md:{block.line}: a code block without a language; label it (```sh, ```text, ...)"
        assert block.lang in SHELL_LANGS or block.lang in OTHER_LANGS, (
            f"README.md:{block.line}: ```{block.lang} blocks are not checked by tests/python/test_readme.py; "
            f"teach it, or use a checked kind ({sorted(SHELL_LANGS | set(OTHER_LANGS))})"
        )
    assert blocks_of("python"), "README.md has no Python snippet (the Try it section shows one)"


def test_every_readme_command_is_run_or_listed():
    unknown = [f"README.md:{n}: {c}" for n, c in commands() if c not in COMMANDS]
    assert not unknown, (
        "commands in README.md that no test runs; add each to COMMANDS in tests/python/test_readme.py "
        "with the test or scripts/test.sh step that runs it, or run it there:\n  " + "\n  ".join(unknown)
    )
    present = {c for _, c in commands()}
    stale = sorted(set(COMMANDS) - present)
    assert not stale, f"COMMANDS lists commands README.md no longer has (remove them): {stale}"


def test_listed_steps_are_still_in_the_test_script():
    script = TEST_SH.read_text()
    module = sys.modules[__name__]
    for command, (runner, step_pattern) in COMMANDS.items():
        if step_pattern is not None:
            assert re.search(step_pattern, script), (
                f"{command!r} is said to be run by {runner}, but scripts/test.sh has no /{step_pattern}/"
            )
        tests = re.findall(r"\btest_\w+", runner)
        for name in tests:
            assert callable(getattr(module, name, None)), f"{command!r}: {name} is not a test of this file"
        assert step_pattern is not None or tests, f"{command!r}: names neither a test nor a scripts/test.sh step"


def readme_command(command: str) -> str:
    assert command in {c for _, c in commands()}, f"README.md no longer has `{command}`"
    return command


# --------------------------------------------------------------------------
# Commands run here
# --------------------------------------------------------------------------


def run_sh(command: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"`{command}` (in {cwd}) exited with {done.returncode}\n"
        f"--- stdout ---\n{tail(done.stdout)}\n--- stderr ---\n{tail(done.stderr)}"
    )
    return done


def auth_file_text() -> str:
    tomls = [b for b in blocks_of("toml") if "[[principal]]" in b.text]
    assert len(tomls) == 1, "README.md should show one auth file (a ```toml block with [[principal]])"
    return tomls[0].text


def test_token_hash_command(tmp_path: Path):
    """The README's example hash is the token `test`'s, by its own command."""
    command = readme_command('echo -n "$TOKEN" | sha256sum')
    done = run_sh(command, tmp_path, env={"TOKEN": "test"})
    digest = done.stdout.split()[0]
    assert digest == hashlib.sha256(b"test").hexdigest(), done.stdout
    principals = tomllib.loads(auth_file_text())["principal"]
    assert principals[0]["token_sha256"] == digest, "the README's first principal should hold the hash of `test`"
    assert principals[1]["token_sha256"] == hashlib.sha256(b"portal").hexdigest(), "the second should hold `portal`'s"
    assert "`test`" in readme_text() and "`portal`" in readme_text(), "the README should say whose hashes they are"


def test_test_script_help():
    done = run_sh(readme_command("bash scripts/test.sh --help"), ROOT)
    assert "--python-only" in done.stdout and "pytest" in done.stdout, done.stdout


# --------------------------------------------------------------------------
# The demo, as on a fresh clone
# --------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This environment without adlake's own variables: `cargo run` on a
    fresh clone sees none (an ADLAKE_AUTH_FILE would leave demo mode)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADLAKE_", "OTEL_"))}
    env["RUST_BACKTRACE"] = "1"
    return env


@dataclass
class Started:
    server: Server
    stderr_text: str = ""
    seconds: float = 0.0
    args: list[str] = field(default_factory=list)


def start_adlake(workdir: Path, args: list[str], timeout_s: float, log_name: str) -> Started:
    """`adlake ARGS` on free ports in `workdir`, with none of the caller's
    ADLAKE_* settings, until its ready line and /readyz."""
    stderr_path = workdir.parent / f"{workdir.name}.{log_name}.stderr.log"
    started_at = time.monotonic()
    server = launch_adlake(args, cwd=workdir, stderr_path=stderr_path, env=clean_env(), timeout_s=timeout_s)
    OWN_SERVERS.append(server)
    cmd = [str(binary("adlake")), *args, "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
    return Started(server, stderr_path.read_text(errors="replace"), time.monotonic() - started_at, cmd)


def help_value(stderr_text: str, label: str) -> str:
    m = re.search(rf"^\s*{re.escape(label)}\s*:\s*(\S+)", stderr_text, re.M)
    assert m, f"the demo start printed no `{label} :` line:\n{tail(stderr_text)}"
    return m[1]


def connect(uri: str, **kwargs):
    import adbc_driver_flightsql.dbapi as flightsql

    return flightsql.connect(uri, db_kwargs=adbc_db_kwargs(**kwargs), autocommit=True)


def venv_dir() -> Path:
    """The virtualenv this test runs in (the README's .venv), else the repo's."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    return ROOT / ".venv"


# Servers this file started (STARTED_SERVERS also holds the session's).
OWN_SERVERS: list[Server] = []


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty directory standing in for the root of a fresh clone."""
    workdir = tmp_path_factory.mktemp("fresh-clone")
    yield workdir
    for srv in OWN_SERVERS:
        srv.stop()


def test_demo_start_as_the_readme_says(fresh_clone: Path):
    readme_command("cargo run --release")
    workdir = fresh_clone

    # 1. `cargo run --release`: the service with no arguments (ports aside).
    demo = start_adlake(workdir, [], INGEST_TIMEOUT_S + STARTUP_TIMEOUT_S, "demo")
    print(f"\ndemo start (seeding the warehouse, debug build): {demo.seconds:.1f}s")
    try:
        warehouse = workdir / "data" / "warehouse"
        tokens = workdir / "data" / "demo-tokens.toml"
        assert (warehouse / "ad_performance" / "_delta_log").is_dir(), f"no ./data/warehouse tables: {demo.stderr_text[-2000:]}"
        assert tokens.is_file(), "no ./data/demo-tokens.toml"
        assert tokens.stat().st_mode & 0o077 == 0, "the demo tokens are readable by others"

        uri = help_value(demo.stderr_text, "Flight SQL URI")
        token = help_value(demo.stderr_text, "agency token")
        assert uri == demo.server.flight_uri, f"the help names {uri}, the server listens on {demo.server.flight_uri}"
        assert help_value(demo.stderr_text, "tokens") == "./data/demo-tokens.toml"

        # 3. The lines the README shows are the lines printed (its default
        # address standing for the free port used here).
        (text_block,) = [b for b in blocks_of("text") if "demo mode" in b.text]
        printed = {line.rstrip() for line in demo.stderr_text.splitlines()}
        for line in text_block.text.splitlines():
            want = line.replace("grpc://127.0.0.1:50051", uri).replace("<token>", token).rstrip()
            assert want in printed, f"README.md:{text_block.line}: the demo does not print {want!r}:\n{tail(demo.stderr_text, 30)}"

        # The README's snippet as printed, with the printed address and token,
        # saved as query.py and run by the README's command.
        (snippet,) = blocks_of("python")
        assert "grpc://127.0.0.1:50051" in snippet.text and "<token>" in snippet.text, snippet.text
        (workdir / "query.py").write_text(snippet.text.replace("grpc://127.0.0.1:50051", uri).replace("<token>", token))
        venv = workdir / ".venv"
        if not venv.exists():
            venv.symlink_to(venv_dir(), target_is_directory=True)
        done = run_sh(readme_command(".venv/bin/python query.py"), workdir, env=clean_env())
        shown = set(re.findall(r'"([a-z_]+_ads)"', done.stdout))
        assert "pyarrow.Table" in done.stdout and shown, f"query.py printed no rows:\n{done.stdout}"
        assert shown <= AD_PLATFORMS, f"the demo has platforms without connectors: {shown - AD_PLATFORMS}"

        # 1. What the demo holds: 5 clients, 90 days up to yesterday, 2-4 ad
        # platforms each among those with connectors.
        with connect(uri, token=token) as conn:
            stats = query(conn, "SELECT count(DISTINCT client_id) AS clients, min(date) AS first, max(date) AS last "
                          "FROM ad_performance").to_pylist()[0]
            per_client = query(conn, "SELECT client_id, count(DISTINCT platform) AS n FROM ad_performance "
                               "GROUP BY client_id").to_pylist()
            # SQL the README quotes runs as written.
            for sql in [s for s in inline_code(readme_text()) if s.upper().startswith("SELECT ")]:
                query(conn, sql)
            # And every statement of the ```sql blocks, each with rows.
            for block in blocks_of("sql"):
                code = "\n".join(line for line in block.text.splitlines() if not line.lstrip().startswith("--"))
                for sql in [s.strip() for s in code.split(";") if s.strip()]:
                    table = query(conn, sql)
                    assert table.num_rows > 0 or "data_quality" in sql, f"README.md:{block.line}: no rows from {sql}"
        assert stats["clients"] == 5, stats
        yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
        assert stats["last"] in (yesterday, yesterday - timedelta(days=1)), stats
        assert stats["last"] - stats["first"] == timedelta(days=89), stats
        assert all(2 <= r["n"] <= 4 for r in per_client), per_client

        # BI tools: any user name, the token as the password.
        with connect(uri, username="any-bi-tool", password=token) as conn:
            assert query(conn, "SELECT count(*) AS n FROM ad_performance").to_pylist()[0]["n"] > 0
    finally:
        demo.server.stop()

    # Later starts reuse the data and the tokens.
    first_tokens = tokens.read_text()
    again = start_adlake(workdir, [], STARTUP_TIMEOUT_S, "demo-again")
    try:
        assert help_value(again.stderr_text, "agency token") == token
        assert tokens.read_text() == first_tokens
        assert "seeding" not in again.stderr_text, "the second start seeded the warehouse again"
    finally:
        again.server.stop()

    # The README's auth file: `cargo run --release -- --auth-file auth.toml`.
    command = readme_command("cargo run --release -- --auth-file auth.toml")
    args = shlex.split(command.split(" -- ", 1)[1])
    (workdir / "auth.toml").write_text(auth_file_text())
    prod = start_adlake(workdir, args, STARTUP_TIMEOUT_S, "auth-file")
    try:
        assert "demo mode" not in prod.stderr_text
        with connect(prod.server.flight_uri, token="test") as conn:
            assert query(conn, "SELECT count(DISTINCT client_id) AS n FROM ad_performance").to_pylist()[0]["n"] == 5
        portal = tomllib.loads(auth_file_text())["principal"][1]["clients"]
        with connect(prod.server.flight_uri, token="portal") as conn:
            seen = query(conn, "SELECT DISTINCT client_id FROM ad_performance").column("client_id").to_pylist()
        assert seen == portal, f"the README's second principal sees {seen}, its file says {portal}"
        with pytest.raises(Exception, match=r"(?i)unauthenticated|unauthorized"):
            with connect(prod.server.flight_uri, token=token) as conn:
                query(conn, "SELECT 1")
    finally:
        prod.server.stop()


# --------------------------------------------------------------------------
# Flags and environment variables against --help
# --------------------------------------------------------------------------

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
ENV_VAR = re.compile(r"\b(?:ADLAKE|OTEL)_[A-Z0-9_]*[A-Z0-9]\b")


def run_help(*argv: str) -> str:
    done = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, timeout=60, env=clean_env(), stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"`{' '.join(argv)} --help` exited with {done.returncode}: {done.stderr}"
    return done.stdout


_helps: dict[tuple[str, ...], str] = {}


def help_of(command: tuple[str, ...]) -> str:
    """`--help` of ("adlake",) or ("adlake-ingest", SUB)."""
    if command not in _helps:
        _helps[command] = run_help(str(binary(command[0])), *command[1:])
    return _helps[command]


def ingest_subcommands() -> list[str]:
    text = help_of(("adlake-ingest",))
    section = text.split("Commands:", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in section.splitlines() if line.strip() and line.split()[0] != "help"]


def help_entries(text: str) -> dict[str, str]:
    """--flag -> its entry in clap's help (the option line and description)."""
    entries: dict[str, str] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        m = re.match(r"^\s{2,}(?:-\w, )?(--[a-z][a-z0-9-]*)", line)
        if m:
            current = [line]
            entries[m[1]] = ""
            name = m[1]
        elif current is not None:
            current.append(line)
        if current is not None:
            entries[name] = "\n".join(current)
    return entries


def command_of(span: str, row_command: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Which binary an inline code span's flags belong to."""
    words = span.split()
    if not words:
        return row_command
    if words[0] == "adlake":
        return ("adlake",)
    if words[0] == "adlake-ingest":
        return ("adlake-ingest", words[1]) if len(words) > 1 and not words[1].startswith("-") else ("adlake-ingest",)
    if row_command and row_command[0] == "adlake-ingest" and words[0] in ingest_subcommands():
        return ("adlake-ingest", words[0])
    if words[0].startswith("--"):
        return row_command
    return None  # cargo, SQL, ...


def check_flags(where: str, span: str, command: tuple[str, ...], problems: list[str]) -> None:
    entries = help_entries(help_of(command))
    for flag in FLAG.findall(span):
        if flag not in entries:
            problems.append(f"{where}: `{span}` names {flag}, which `{' '.join(command)} --help` does not list")


def test_help_of_every_binary_works():
    assert "Usage:" in help_of(("adlake",))
    subs = ingest_subcommands()
    assert {"demo", "run", "freshness"} <= set(subs), subs
    for sub in subs:
        assert "Usage:" in help_of(("adlake-ingest", sub))


def test_binaries_table_flags_are_in_help():
    problems: list[str] = []
    rows = table_rows("## Binaries")
    for cells in rows:
        spans = inline_code(" | ".join(cells))
        row_command = command_of(spans[0], None)
        assert row_command, f"Binaries table row does not start with a command: {cells[0]}"
        if row_command[0] == "adlake-ingest":
            assert len(row_command) == 2 and row_command[1] in ingest_subcommands(), cells[0]
        for span in spans:
            command = command_of(span, row_command)
            if command is not None:
                check_flags(f"Binaries table, row {cells[0][:40]}", span, command, problems)
    named = {command_of(inline_code(cells[0])[0], None) for cells in rows}
    missing = [s for s in ingest_subcommands() if ("adlake-ingest", s) not in named]
    assert not problems, "\n".join(problems)
    assert not missing, f"adlake-ingest subcommands the Binaries table does not describe: {missing}"


def test_limits_table_flags_and_env_vars_are_in_adlake_help():
    entries = help_entries(help_of(("adlake",)))
    problems = []
    for cells in table_rows("### Limits"):
        flags = FLAG.findall(cells[0])
        assert flags, f"Limits row without a flag: {cells}"
        for flag in flags:
            if flag not in entries:
                problems.append(f"Limits: {flag} is not in `adlake --help`")
        for env in ENV_VAR.findall(cells[0]):
            if f"env: {env}=" not in entries.get(flags[0], "") and f"env: {env}]" not in entries.get(flags[0], ""):
                problems.append(f"Limits: {env} is not the environment variable of {flags[0]} in `adlake --help`")
    assert not problems, "\n".join(problems)


def test_prose_flags_are_in_help():
    """Inline code outside the tables: `adlake --x`, `adlake-ingest sub --x`
    against that command; a bare `--x` against every binary's help."""
    text = readme_text()
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("|"))
    every = set()
    for command in [("adlake",), *[("adlake-ingest", s) for s in ingest_subcommands()]]:
        every |= set(help_entries(help_of(command)))
    problems: list[str] = []
    for span in inline_code(prose):
        command = command_of(span, None)
        if command is not None:
            check_flags("README.md", span, command, problems)
        elif span.startswith("--"):
            for flag in FLAG.findall(span):
                if flag not in every and flag not in FOREIGN_FLAGS:
                    problems.append(f"README.md: `{span}`: {flag} is in no binary's --help")
    assert not problems, "\n".join(problems)


def test_env_vars_named_in_readme_are_in_help():
    helps = "\n".join(
        help_of(c) for c in [("adlake",), *[("adlake-ingest", s) for s in ingest_subcommands()]]
    )
    names = sorted(set(ENV_VAR.findall(readme_text())))
    assert names, "README.md names no environment variable"
    missing = [n for n in names if n not in helps]
    assert not missing, f"environment variables README.md names that no --help lists: {missing}"
    # Templated names (ADLAKE_SECRET_<NAME>_<FIELD>): their fixed prefix.
    for prefix in set(re.findall(r"\b((?:ADLAKE|OTEL)_[A-Z0-9_]*)<", readme_text())):
        assert prefix in helps, f"README.md names {prefix}<...>, which no --help mentions"
