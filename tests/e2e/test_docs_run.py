"""Every command block of README.md and docs/, run as printed: the docs cannot drift from the code.

Each doc's ```sh, ```bash, ```console and ```python blocks run in order, as typed
into one terminal (one bash per block, the exported variables and the folder
carried to the next), in a fresh folder of their own with the project's
``fairstream`` and ``python3`` on the PATH and no ``FAIRSTREAM_*`` variable set.
The embedded stack is the one a doc starts itself (``fairstream dev up``).

Comments just before a block change that:

- ``<!-- not run: WHY -->``: the block needs production (a real cluster,
  systemd, a service of Drupal.org's); WHY says so and is shown with the skip.
- ``<!-- file: NAME -->``: the block is a file the reader saves as NAME; it is
  written to the folder before the doc's commands run.

and one anywhere in a doc, ``<!-- run after: docs/OTHER.md -->``, runs it in
OTHER's folder after OTHER (the enterprise feed reads the operator guide's stack).
Anything else that fails, fails the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from infra import devstack

REPO = Path(__file__).resolve().parents[2]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")))
RUN_LANGUAGES = {"sh", "bash", "console", "python"}
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
COMMENT = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
RUN_AFTER = re.compile(r"<!-- run after: (?P<doc>\S+) -->")
# Commands a reader could paste from a block that is not marked as one.
COMMAND_LIKE = re.compile(r"^\s*(\$ |fairstream |kcat |make |curl |uv |python3 )")
BLOCK_TIMEOUT = 240.0


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    markers: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"

    def marker(self, name: str) -> str | None:
        """The text after ``name:`` of this block's marker, or None."""
        for text in self.markers:
            if text.startswith(f"{name}:"):
                return text.split(":", 1)[1].strip()
        return None


def blocks_of(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc`` with the comment lines just above each."""
    lines = doc.read_text().splitlines()
    found: list[Block] = []
    at = 0
    while at < len(lines):
        opening = FENCE.match(lines[at])
        if opening is None:
            at += 1
            continue
        indent = len(opening["indent"])
        end = at + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        markers: list[str] = []
        above = at - 1
        while above >= 0 and (comment := COMMENT.match(lines[above])):
            markers.insert(0, comment["text"])
            above -= 1
        code = "\n".join(line[indent:] for line in lines[at + 1 : end]) + "\n"
        found.append(Block(doc, at + 1, opening["lang"], code, tuple(markers)))
        at = end + 1
    return found


def doc_id(doc: Path) -> str:
    return str(doc.relative_to(REPO))


def runnable(doc: Path) -> bool:
    return any(
        b.lang in RUN_LANGUAGES and b.marker("not run") is None and b.marker("file") is None
        for b in blocks_of(doc)
    )


def test_every_command_block_is_run_or_says_why_not() -> None:
    problems = []
    for doc in DOCS:
        for block in blocks_of(doc):
            reason = block.marker("not run")
            if reason is not None and len(reason) < 15:
                problems.append(f"{block.where}: `not run:` needs a reason saying what it needs")
            if block.lang not in RUN_LANGUAGES and COMMAND_LIKE.search(block.code):
                problems.append(
                    f"{block.where}: a ```{block.lang or '(no language)'} block with commands; "
                    "mark it ```sh so it is run, or `<!-- not run: why -->`"
                )
        text = doc.read_text()
        for after in RUN_AFTER.finditer(text):
            if not (REPO / after["doc"]).is_file():
                problems.append(f"{doc_id(doc)}: runs after {after['doc']}, which does not exist")
    assert not problems, "\n".join(problems)


def test_the_markers_parse_as_documented() -> None:
    guide = REPO / "docs" / "operator-guide.md"
    marked = [b for b in blocks_of(guide) if b.marker("not run")]
    assert any("production" in (b.marker("not run") or "") for b in marked)
    feed = blocks_of(REPO / "docs" / "enterprise-feed.md")
    assert [b.marker("file") for b in feed if b.marker("file")] == ["verify_feed.py"]
    indented = [
        b for b in blocks_of(REPO / "docs" / "publisher-guide.md") if "trust rotate" in b.code
    ]
    assert indented and indented[0].code.startswith("fairstream trust rotate")


@dataclass
class DocRun:
    """One doc's run: its folder, and every process group its blocks started."""

    folder: Path
    log: Path
    groups: list[int] = field(default_factory=list)


class DocRunner:
    """Runs docs, each once, dependencies first; stops what they started."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.runs: dict[Path, DocRun] = {}
        self.failures: dict[Path, str] = {}
        venv_bin = str(Path(sys.executable).parent)
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("FAIRSTREAM_") and name != "LD_LIBRARY_PATH"
        }
        self.env["PATH"] = f"{venv_bin}:{self.env.get('PATH', '/usr/bin:/bin')}"

    def run(self, doc: Path) -> DocRun:
        if doc in self.failures:
            pytest.fail(self.failures[doc])
        if doc in self.runs:
            return self.runs[doc]
        after = RUN_AFTER.search(doc.read_text())
        if after is not None:
            folder = self.run(REPO / after["doc"]).folder
        else:
            folder = self.workspace / doc_id(doc).replace("/", "-").removesuffix(".md")
            folder.mkdir()
        run = DocRun(folder, self.workspace / f"{doc_id(doc).replace('/', '-')}.log")
        self.runs[doc] = run
        try:
            self._run_blocks(doc, run)
        except pytest.fail.Exception as exc:
            self.failures[doc] = str(exc)
            raise
        return run

    def _run_blocks(self, doc: Path, run: DocRun) -> None:
        blocks = blocks_of(doc)
        for block in blocks:
            name = block.marker("file")
            if name is not None:
                (run.folder / name).write_text(block.code)
        state = run.folder / f".{doc.stem}-shell"
        state.mkdir(exist_ok=True)
        env_file, cwd_file = state / "env", state / "cwd"
        cwd_file.write_text(str(run.folder))
        for index, block in enumerate(blocks):
            if block.lang not in RUN_LANGUAGES or block.marker("file") is not None:
                continue
            if block.marker("not run") is not None:
                continue
            commands = block.code
            if block.lang == "console":
                commands = "\n".join(
                    line[2:] for line in block.code.splitlines() if line.startswith("$ ")
                )
            if block.lang == "python":
                script = state / f"block-{index}.py"
                script.write_text(block.code)
                commands = f"python3 {script}\n"
            wrapper = state / f"block-{index}.sh"
            wrapper.write_text(
                f"if [ -f {env_file} ]; then . {env_file}; fi\n"
                f'cd "$(cat {cwd_file})"\n'
                f"trap 'export -p > {env_file}; pwd > {cwd_file}' EXIT\n"
                f"{commands}\n"
            )
            self._run_block(block, wrapper, run)

    def _run_block(self, block: Block, wrapper: Path, run: DocRun) -> None:
        with run.log.open("a") as log:
            log.write(f"\n===== {block.where}\n{block.code}----- output\n")
            log.flush()
            started = time.monotonic()
            process = subprocess.Popen(
                ["bash", str(wrapper)],
                cwd=run.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            run.groups.append(process.pid)
            try:
                returncode = process.wait(timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                returncode = None
            log.write(f"----- exit {returncode} after {time.monotonic() - started:.1f} s\n")
        if returncode != 0:
            tail = "\n".join(run.log.read_text().splitlines()[-40:])
            what = "timed out" if returncode is None else f"exited {returncode}"
            pytest.fail(
                f"{block.where}: the ```{block.lang} block {what}; run it as printed, or mark "
                f"it `<!-- not run: why -->` if it needs production. Output:\n{tail}"
            )

    def stop(self) -> None:
        """Stop every process the blocks left running, then every stack they started."""
        groups = [g for run in self.runs.values() for g in run.groups]
        for group in groups:
            _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
            time.sleep(0.2)
        for group in groups:
            _signal_group(group, signal.SIGKILL)
        for state in self.workspace.rglob(devstack.STATE_FILE):
            devstack.down(state.parent)


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocRunner]:
    runner = DocRunner(tmp_path_factory.mktemp("docs-run"))
    try:
        yield runner
    finally:
        runner.stop()


@pytest.mark.parametrize("doc", [d for d in DOCS if runnable(d)], ids=doc_id)
def test_the_doc_runs_as_printed(doc: Path, docs: DocRunner) -> None:
    run = docs.run(doc)
    assert run.log.is_file(), f"{doc_id(doc)} ran no block"


def test_the_enterprise_feed_recipe_verifies_the_operator_guide_releases(docs: DocRunner) -> None:
    run = docs.run(REPO / "docs" / "enterprise-feed.md")
    log = run.log.read_text()
    assert "ok   fair.trust[0]@0 trust root v1" not in log  # the pinned root is skipped
    accepted = re.findall(r"^ok   fair\.releases\[\d+\]@\d+ release_published drupal/", log, re.M)
    assert len(accepted) == 31, log[-3000:]
    assert "0 failed, verified against trust root v1" in log


def test_commands_find_the_stack_from_a_folder_below_it(docs: DocRunner) -> None:
    """--data-dir defaults to the nearest .fairstream upward, as the operator guide says."""
    run = docs.run(REPO / "docs" / "operator-guide.md")
    below = run.folder / "keys" / "deeper"
    below.mkdir(parents=True)
    result = subprocess.run(
        ["fairstream", "dev", "status", "--json"],
        cwd=below,
        env=docs.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'"data_dir": "{run.folder / ".fairstream"}"' in result.stdout
