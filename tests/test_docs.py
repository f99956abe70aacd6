"""The README and docs/: every link resolves, and every `molgan ...` command line they show parses.

Documentation rots silently: a moved page, a renamed heading or a dropped option still renders.
These checks read the Markdown as text (no network, no rendering) and the command line as click
sees it (`--help` level: the subcommand exists and each option is one of its options).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main

from molgan.cli import app
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
MAX_README_LINES = 250

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
# Shell-like fences whose `molgan` lines are checked; an unlabelled fence counts as shell.
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "zsh"}
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.I)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1)[^\n]|\n(?!\n))+?\1")  # may wrap, not across paragraphs
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def relative(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def split_fences(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """(prose lines, code lines with their fence's language), each with its 1-based line number."""
    prose: list[tuple[int, str]] = []
    code: list[tuple[int, str, str]] = []
    fence: str | None = None
    language = ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, language = match.group(2), match.group(3).lower()
        elif fence is not None and line.strip().startswith(fence) and not line.strip()[len(fence):].strip():
            fence = None
        elif fence is not None:
            code.append((number, line, language))
        else:
            prose.append((number, line))
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation other than hyphens
    and underscores dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a Markdown file's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of every Markdown link, image and HTML src/href outside code.

    The prose is searched as one text, since a link's words may wrap onto the next line; code
    blocks and inline code are blanked out first, keeping their line breaks for the line numbers.
    """
    text = path.read_text(encoding="utf-8")
    prose, _ = split_fences(text)
    kept = dict(prose)
    lines = [kept.get(number, "") for number in range(1, len(text.splitlines()) + 1)]
    searched = INLINE_CODE.sub(lambda m: "\n" * m.group(0).count("\n"), "\n".join(lines))
    for pattern in (LINK, HTML_SRC):
        for match in pattern.finditer(searched):
            yield searched.count("\n", 0, match.start()) + 1, match.group(1)


def link_problem(source: Path, target: str) -> str | None:
    """Why ``target``, linked from ``source``, does not resolve; ``None`` when it does."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
        return None
    file_part, _, anchor = target.partition("#")
    destination = source if not file_part else (source.parent / file_part).resolve()
    if not destination.exists():
        return f"no such file: {file_part}"
    if REPO_ROOT.resolve() not in destination.resolve().parents:
        return f"outside the repository: {file_part}"
    if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
        return f"no heading for #{anchor} in {relative(destination)}"
    return None


def test_readme_is_a_landing_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines, at most {MAX_README_LINES}"


@pytest.mark.parametrize("path", markdown_files(), ids=relative)
def test_docs_links_and_images_resolve(path: Path) -> None:
    problems = [
        f"{relative(path)}:{number}: {target}: {problem}"
        for number, target in links(path)
        if (problem := link_problem(path, target)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_docs_every_page_is_reachable_from_the_readme() -> None:
    reached: set[Path] = set()
    todo = [README.resolve()]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for _, target in links(page):
            file_part = target.partition("#")[0]
            if file_part.endswith(".md") and not re.match(r"^[a-z][a-z0-9+.-]*:", file_part, re.I):
                destination = (page.parent / file_part).resolve()
                if destination.exists():
                    todo.append(destination)
    missing = [relative(p) for p in markdown_files() if p.resolve() not in reached]
    assert not missing, f"not linked from README.md or a page it links to: {missing}"


def test_docs_slugs_follow_github() -> None:
    assert slug("Devices and several processes") == "devices-and-several-processes"
    assert slug("Ablation of the ideas (400 steps)") == "ablation-of-the-ideas-400-steps"
    assert slug("Model card: `qm9`") == "model-card-qm9"
    assert slug("REINFORCE's samples and their temperature") == "reinforces-samples-and-their-temperature"


# --- command lines ---------------------------------------------------------------------------


@cache
def cli() -> Any:
    """The click command of `molgan` (typer may bring click's classes vendored or not: duck-typed)."""
    return typer.main.get_command(app)


def subcommands(command: Any) -> dict[str, Any] | None:
    """A group's commands by name; ``None`` for a command that takes no subcommand."""
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def option_names(command: Any) -> set[str]:
    names = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}
    return names | {"--help"}


def molgan_arguments(tokens: list[str]) -> list[str] | None:
    """The arguments after `molgan` when ``tokens`` run molgan: `molgan ...` (after any VAR=value),
    or `... -m molgan ...` (torchrun, python -m); ``None`` for any other program."""
    words = list(tokens)
    while words and ENV_ASSIGNMENT.match(words[0]):
        words.pop(0)
    if words and Path(words[0]).name == "molgan":
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "molgan":
            return words[i + 2:]
    return None


def check_command(line: str) -> list[str]:
    """Problems of one shell line that runs molgan; [] when it parses, or runs something else.

    Placeholders are allowed: `[--seed 1]` is checked as `--seed 1`, `[FILE|qm9|moses]` and `...`
    are taken as values. A trailing `# comment` is ignored.
    """
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as error:
        return [f"cannot split: {error}"]
    arguments = molgan_arguments(tokens)
    if arguments is None:
        return []
    words = [w.strip("[]") for w in arguments]
    words = [w for w in words if w and w not in ("...", "|")]
    command, path = cli(), ["molgan"]
    while (commands := subcommands(command)) is not None and words and not words[0].startswith("-"):
        name = words.pop(0)
        if name not in commands:
            return [f"{' '.join(path)} has no command {name!r}"]
        command, path = commands[name], [*path, name]
    if (commands := subcommands(command)) is not None and "--help" not in words:
        return [f"{' '.join(path)} needs a command: one of {sorted(commands)}"]
    known = option_names(command)
    problems = []
    for word in words:
        if not word.startswith("-") or re.match(r"^-\d", word):  # a value, or a negative number
            continue
        name = word.split("=", 1)[0]
        if name not in known:
            problems.append(f"{' '.join(path)} has no option {name}")
    return problems


def shell_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The logical lines of the shell-like code blocks of ``path``, `\\` continuations joined."""
    _, code = split_fences(path.read_text(encoding="utf-8"))
    pending: tuple[int, str] | None = None
    for number, line, language in code:
        if language not in SHELL_LANGUAGES:
            continue
        start, text = pending if pending else (number, "")
        text += line
        if text.rstrip().endswith("\\"):
            pending = (start, text.rstrip()[:-1] + " ")
            continue
        pending = None
        yield start, text.strip().removeprefix("$ ")
    if pending:
        yield pending


@pytest.mark.parametrize("path", markdown_files(), ids=relative)
def test_docs_molgan_command_lines_parse(path: Path) -> None:
    problems = [
        f"{relative(path)}:{number}: {line}\n    {problem}"
        for number, line in shell_lines(path)
        for problem in check_command(line)
    ]
    assert not problems, "\n".join(problems)


def test_docs_show_molgan_command_lines() -> None:
    """The checker above must see the README's command lines, or it checks nothing."""
    lines = [line for _, line in shell_lines(README) if molgan_arguments(shlex.split(line, comments=True))]
    assert len(lines) >= 8


@pytest.mark.parametrize(
    "line",
    [
        "molgan sample -n 10 --seed 1 -o out.csv",
        "molgan sample qm9 -n 10   # a bundled model by name",
        "molgan sample [CHECKPOINT] -n 100 [--seed 1] [--valid-only] [--no-unique]",
        "molgan data prepare [FILE|qm9|moses] [--max-atoms N] [--set data.limit=K ...] --no-progress",
        "MOLGAN_MODELS=checkpoints/ molgan serve --port=8001",
        "torchrun --standalone --nproc_per_node=2 -m molgan train --config configs/qm9.yaml --resume DIR",
        "docker run --rm -p 8000:8000 molgan",  # another program
        "pip install 'molgan[tensorboard]'",
    ],
)
def test_docs_command_checker_accepts(line: str) -> None:
    assert check_command(line) == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("molgan sample --nope", "molgan sample has no option --nope"),
        ("molgan sample [-x 3]", "molgan sample has no option -x"),
        ("molgan train --config c.yaml --temperature 1", "molgan train has no option --temperature"),
        ("molgan data fetch qm9", "molgan data has no command 'fetch'"),
        ("molgan data --limit 5", "molgan data needs a command"),
        ("molgan smaple -n 3", "molgan has no command 'smaple'"),
        ("torchrun --nproc_per_node=2 -m molgan train --steps 3", "molgan train has no option --steps"),
    ],
)
def test_docs_command_checker_rejects(line: str, problem: str) -> None:
    problems = check_command(line)
    assert problems and problems[0].startswith(problem), problems
