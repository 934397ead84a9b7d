"""The README's examples run as written, in order, in a fresh copy of the repository.

The blocks are read from README.md when the tests are collected: ```bash, ```sh and ```console
(the `$ ` lines) run in bash, ```python in `.venv/bin/python`. An HTML comment right before a
block steers it:

- `<!-- readme-test: skip (why) -->`: not run; reported as a skipped test with the reason.
- `<!-- readme-test: background HOST:PORT (why) -->`: a server that keeps its own terminal. It
  starts in a session of its own, the run waits until HOST:PORT accepts connections, and at the end
  it gets Ctrl-C (SIGINT) and must exit 0.

Every other block runs in one bash session, the README's "second terminal": variables, exports
and background jobs carry over from block to block, as they do for someone pasting them. A block
passes when none of its commands fails (an ERR trap records each one) and its output shows no
failure the exit status hides: the CLI's `error ...` line, a Python traceback, or an
`{"error": {...}}` answer (the admin API's, which `curl -s` exits 0 on; the CLI's with `--json`).

Only the install commands are not run as written: they would reinstall, from the network and for
minutes, into the virtual environment these tests run in. The copy's `.venv` is that environment,
and the test checks that what each install command asks for is installed there instead. The
README's test command must be the very line `.ci/run` runs from a clean clone.

Afterwards no process the blocks started may be left, the copy must hold no untracked, non-ignored
file and no changed tracked one, and the empty HOME the run had must still be empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SERVER_COMMAND = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/s3kms server"
BLOCK_TIMEOUT = 60.0
SHELLS = {"bash", "sh", "console"}

# Output that means a command failed although its exit status may not say so (see the docstring).
FAILURE_OUTPUT = re.compile(
    r'^error |^Traceback \(most recent call last\)|\{\s*"error":\s*\{', re.M
)
# The install commands (the only ones rewritten): a venv made and installed into ahead of a
# command, and a pip install line of its own.
VENV_PREFIX = re.compile(r"^python3 -m venv \.venv && \.venv/bin/pip install ([^&#\n]+?) && ", re.M)
PIP_LINE = re.compile(r"^\.venv/bin/pip install ([^&#\n]+?)[ \t]*(#[^\n]*)?$", re.M)
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->", re.S)
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclasses.dataclass
class Block:
    line: int  # of the opening fence in README.md
    lang: str
    text: str
    skip: str | None = None
    background: tuple[str, int] | None = None

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def readme_blocks(markdown: str) -> list[Block]:
    blocks = []
    for fence in FENCE.finditer(markdown):
        lang = fence.group(1)
        if lang not in SHELLS and lang != "python":
            continue
        line = markdown.count("\n", 0, fence.start()) + 1
        text = fence.group(2)
        if lang == "console":
            text = "".join(s[2:] + "\n" for s in text.splitlines() if s.startswith("$ "))
        block = Block(line, lang, text)
        before = markdown[: fence.start()].rstrip().splitlines()
        marker = MARKER.fullmatch(before[-1].strip()) if before else None
        if marker:
            verb, _, rest = marker.group(1).partition(" ")
            if verb == "skip":
                block.skip = rest.strip().removeprefix("(").removesuffix(")") or "no reason given"
            elif verb == "background" and (m := re.match(r"(\S+):(\d+)\b", rest)):
                block.background = (m.group(1), int(m.group(2)))
            else:
                raise ValueError(f"README.md:{line}: unknown readme-test marker {marker.group(0)}")
        blocks.append(block)
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def rewrite_installs(text: str) -> tuple[str, list[list[str]]]:
    """The block without its install commands, and the pip arguments of each one taken out."""
    installs = [shlex.split(m.group(1)) for m in VENV_PREFIX.finditer(text)]
    text = VENV_PREFIX.sub("", text)
    installs += [shlex.split(m.group(1)) for m in PIP_LINE.finditer(text)]
    text = PIP_LINE.sub(lambda m: f": installed already: {m.group(0)}", text)
    return text, installs


def missing_from_venv(pip_args: list[str]) -> list[str]:
    """What `pip install <pip_args>` would install that this environment lacks (direct deps).

    `.[extras]` is this repository: s3kms installed from here (`-e`: editable), and the
    dependencies pyproject.toml names now (the installed metadata is as old as the last install).
    An editable install stands in for a plain one: it runs the same source, interpreted.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted: list[str] = []
    editable = "-e" in pip_args
    for arg in (a for a in pip_args if a != "-e"):
        local = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", arg)
        if not local:
            wanted.append(arg)
            continue
        direct = json.loads(
            importlib.metadata.distribution("s3kms").read_text("direct_url.json") or "{}"
        )
        found_editable = direct.get("dir_info", {}).get("editable", False)
        if direct.get("url") != ROOT.as_uri() or (editable and not found_editable):
            how = "editable " if editable else ""
            return [f"s3kms installed {how}from {ROOT} (found: {direct or 'not from a directory'})"]
        wanted += project["dependencies"]
        for extra in filter(None, (local.group(1) or "").split(",")):
            wanted += project["optional-dependencies"][extra]
    missing = []
    for req in map(Requirement, wanted):
        if req.marker and not req.marker.evaluate():
            continue
        try:
            found = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(str(req))
            continue
        if not req.specifier.contains(found, prereleases=True):
            missing.append(f"{req} (found {found})")
    return missing


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no obstacle
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def session_processes(sessions: set[int]) -> dict[int, str]:
    """Live processes in the given sessions (Linux /proc), pid -> command line."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) in sessions:  # state, ..., session id
            found[int(stat.parent.name)] = cmdline.strip()
    return found


def copy_of_working_tree(dest: Path) -> None:
    """Tracked and untracked, non-ignored files, as `git status` sees them; staged in a new repo."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file() or source.is_symlink():  # a deleted tracked file is not there
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    git = ["git", "-C", str(dest)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    # `.venv` here is a symlink to the environment the tests run in, which the `.venv/` pattern
    # (directories only) does not match.
    (dest / ".git" / "info" / "exclude").write_text("/.venv\n")
    (dest / ".venv").symlink_to(sys.prefix, target_is_directory=True)


def new_user_env(home: Path) -> dict[str, str]:
    """This environment without the venv on PATH, any S3KMS_/Vault setting, or the real HOME."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("S3KMS_", "BAO_", "VAULT_", "AWS_")) and k != "VIRTUAL_ENV"
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["HOME"] = str(home)
    return env


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.skip], ids=lambda b: b.name)
def test_skipped_block(block: Block) -> None:
    pytest.skip(f"{block.name} is marked readme-test: skip ({block.skip})")


def test_the_two_commands() -> None:
    """On a fresh machine: one command starts the server, one runs the tests (as .ci/run does)."""
    section = README.read_text(encoding="utf-8").split("\n## The two commands\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    commands = [b.text.strip() for b in readme_blocks(section) if b.lang in SHELLS]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert len(commands) == 2
    assert commands[0] == SERVER_COMMAND
    assert commands[1] in ci_lines, "the README's test command is not a line of .ci/run"


class Session:
    """The second terminal: one bash reading the blocks from a pipe, `source`d one by one."""

    PREAMBLE = (
        "set -E -o pipefail\n"
        "__err() { __failed+=\"  line $1: $2 (exit $3)\"$'\\n'; }\n"
        'trap \'__err "$LINENO" "$BASH_COMMAND" "$?"\' ERR\n'
    )

    def __init__(self, cwd: Path, env: dict[str, str], work: Path) -> None:
        self.work = work
        self.log = work / "session.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self._send(self.PREAMBLE)

    def _send(self, script: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(script)
        self.proc.stdin.flush()

    def run(self, index: int, block: Block, text: str) -> tuple[int, str, str]:
        """Exit status, failed commands, output."""
        source = self.work / f"block{index}.{'py' if block.lang == 'python' else 'sh'}"
        source.write_text(text)
        status = self.work / f"block{index}.status"
        start = self.log.stat().st_size
        run = f".venv/bin/python {source}" if block.lang == "python" else f"source {source}"
        self._send(
            f"__failed=; {run} < /dev/null; __rc=$?\n"
            f'printf \'%s\\n%s\' "$__rc" "$__failed" > {status}.tmp && mv {status}.tmp {status}\n'
        )
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while not status.exists():
            if self.proc.poll() is not None:
                return self.proc.returncode, "the shell exited", self._output(start)
            if time.monotonic() > deadline:
                return -1, f"no end after {BLOCK_TIMEOUT:.0f} s", self._output(start)
            time.sleep(0.05)
        rc, _, failed = status.read_text().partition("\n")
        return int(rc), failed, self._output(start)

    def _output(self, start: int) -> str:
        return self.log.read_bytes()[start:].decode(errors="replace")

    def close(self) -> int | None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
            return self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None


@pytest.mark.timeout(180)
def test_readme_blocks_run_in_order(tmp_path: Path) -> None:
    if sys.platform != "linux":
        pytest.skip("finds leftover processes in /proc")
    if sys.prefix == sys.base_prefix:
        pytest.skip("not run from a virtual environment: the README runs .venv/bin/...")
    for tool in ("bash", "git", "curl", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"the README's blocks need {tool}")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    runnable = [b for b in BLOCKS if not b.skip]
    ports = sorted(
        {
            int(p)
            for b in runnable
            for p in re.findall(r"(?:127\.0\.0\.1|localhost|0\.0\.0\.0):(\d+)", b.text)
        }
        | {b.background[1] for b in runnable if b.background}
    )
    busy = [p for p in ports if port_in_use(p)]
    if busy:
        pytest.skip(f"the README's blocks use ports {ports}, and {busy} are in use here")

    repo, home, work = tmp_path / "repo", tmp_path / "home", tmp_path / "work"
    for d in (repo, home, work):
        d.mkdir()
    copy_of_working_tree(repo)
    env = new_user_env(home)

    sessions: set[int] = set()  # of what the run starts: all of it must be gone at the end
    backgrounds: list[tuple[Block, subprocess.Popen[bytes], Path]] = []
    session: Session | None = None
    started = time.monotonic()
    ran: list[str] = []
    try:
        for index, block in enumerate(runnable):
            text, installs = rewrite_installs(block.text)
            for pip_args in installs:
                missing = missing_from_venv(pip_args)
                assert not missing, f"{block.name}: pip install {shlex.join(pip_args)}: {missing}"
            if block.background:
                log = work / f"background{index}.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        ["bash", "--noprofile", "--norc", "-c", text],
                        cwd=repo,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                sessions.add(proc.pid)
                backgrounds.append((block, proc, log))
                host, port = block.background
                deadline = time.monotonic() + BLOCK_TIMEOUT
                while not accepts(host, port):
                    assert proc.poll() is None, f"{block.name} exited:\n{log.read_text()}"
                    assert time.monotonic() < deadline, f"{block.name}: {host}:{port} never up"
                    time.sleep(0.1)
                ran.append(f"{block.name}: in the background")
                continue
            if session is None:
                session = Session(repo, env, work)
                sessions.add(session.proc.pid)
            rc, failed, output = session.run(index, block, text)
            seen = FAILURE_OUTPUT.search(output)
            assert rc == 0 and not failed and not seen, (
                f"{block.name} failed (its last command exited {rc}):\n{failed}"
                f"{'output shows: ' + seen.group(0) if seen else ''}\n--- its output:\n{output}"
            )
            ran.append(block.name)
        if session is not None:
            assert session.close() == 0, "the second terminal's shell did not exit cleanly"
        for block, proc, log in backgrounds:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
            try:
                rc = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                rc = None
            assert rc == 0, f"{block.name} after Ctrl-C: exit {rc}\n{log.read_text()}"
        elapsed = time.monotonic() - started
        print(f"ran {len(ran)} README blocks in {elapsed:.1f} s:", *ran, sep="\n  ")
        deadline = time.monotonic() + 10
        while (left := session_processes(sessions)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes the README started are still running: {left}"
    finally:
        if session is not None:
            session.close()
        for pid in session_processes(sessions):  # only after a failure: end what it started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in [*(p for _, p, _ in backgrounds), *([session.proc] if session else [])]:
            proc.kill()  # no-op when it has exited; waited for below either way
            proc.wait(timeout=10)

    git = ["git", "-C", str(repo)]
    untracked = subprocess.run(
        [*git, "ls-files", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    changed = subprocess.run(
        [*git, "diff", "--name-status"], check=True, capture_output=True, text=True
    ).stdout
    assert not untracked, f"the README's blocks leave files git does not ignore:\n{untracked}"
    assert not changed, f"the README's blocks change tracked files:\n{changed}"
    assert not list(home.iterdir()), f"the README's blocks write to HOME: {list(home.iterdir())}"
