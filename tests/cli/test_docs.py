"""Commands that cannot rot: every ``unetseg ...`` command in the README and the guides parses with the CLI's own
parser (a flag renamed or removed fails here, nothing trains), and every relative link and anchor resolves."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from unetseg.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line, argv after ``unetseg``) of each unetseg command in the shell blocks of ``path``."""
    text = path.read_text()
    found = []
    for block in FENCE.finditer(text):
        if block.group(1) not in ("", "bash", "sh", "console"):
            continue
        first = text.count("\n", 0, block.start(2)) + 1
        lines = block.group(2).split("\n")
        joined, start = "", 0
        variables: dict[str, list[str]] = {}  # NAME="--a x --b y" lines: $NAME stands for its words
        for k, line in enumerate(lines):
            if not joined:
                start = first + k
            joined += line.rstrip()
            if joined.endswith("\\"):
                joined = joined[:-1] + " "
                continue
            line_text, joined = joined, ""
            words = []
            if "unetseg" not in line_text and re.match(r"\s*[A-Za-z_]\w*=", line_text):
                try:
                    words = shlex.split(line_text, comments=True)
                except ValueError:
                    words = []
            if words and all(re.fullmatch(r"[A-Za-z_]\w*=.*", w) for w in words):  # D=... V="..." (no command)
                for word in words:
                    name, _, value = word.partition("=")
                    variables[name] = value.split()  # $NAME unquoted: split into words, as the shell does
                continue
            if not re.search(r"(^|[\s;&|(])unetseg\s", line_text):
                continue
            if not block.group(1) and not re.match(r"\s*(\$ )?([A-Z_]+=\S+ )*unetseg\s", line_text):
                continue  # an untagged block's other lines are output, not commands
            lexer = shlex.shlex(line_text, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split, lexer.commenters = True, "#"
            try:
                tokens = list(lexer)
            except ValueError as err:
                raise AssertionError(f"{path.name}:{start}: not a shell line ({err}): {line_text}") from None
            tokens = [word for t in tokens
                      for word in (variables[t[1:]] if t[:1] == "$" and t[1:] in variables else [t])]
            while "unetseg" in tokens:
                i = tokens.index("unetseg")
                rest = tokens[i + 1:]
                end = next((j for j, t in enumerate(rest) if t and set(t) <= set(";&|")), len(rest))
                if rest[:1] != ["=="] and not (i and tokens[i - 1] in ("pip", "install")):
                    found.append((start, rest[:end]))
                tokens = rest[end:]
    return found


ALL = [(path, line, argv) for path in DOCS for line, argv in commands(path)]


def test_the_docs_hold_the_commands():
    readme = [argv for path, _, argv in ALL if path.name == "README.md"]
    assert len(ALL) >= 50 and {"check-data", "train", "evaluate", "predict", "report"} <= {a[0] for a in readme}


@pytest.mark.parametrize("path, line, argv", ALL, ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in ALL])
def test_every_documented_command_parses(path, line, argv, capsys):
    if argv and argv[0] in ("-h", "--help") or "--help" in argv or "-h" in argv:
        return  # help exits on purpose
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{path.relative_to(ROOT)}:{line}: unetseg {shlex.join(argv)}: "
                    f"{capsys.readouterr().err.strip().splitlines()[-1]}")
    assert args.handler is not None


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of ``path``."""
    anchors = set()
    inside = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        if not inside and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return anchors


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for path in DOCS:
        text = FENCE.sub("", path.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{path.relative_to(ROOT)}: {target}: no such heading")
    assert not broken, "\n".join(broken)


def test_every_train_flag_is_documented_in_a_guide():
    """Each flag of ``unetseg train --help`` appears in the README or a guide (``--X`` or its ``--no-X``)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {o for a in sub.choices["train"]._actions for o in a.option_strings if o.startswith("--")} - {"--help"}
    text = "\n".join(path.read_text() for path in DOCS)
    documented = {f for f in flags if re.search(re.escape(f) + r"(?![\w-])", text)}
    negated = {f for f in flags if f.startswith("--no-") and f"--{f[5:]}" in documented}
    positive = {f for f in flags if f"--no-{f[2:]}" in documented}
    assert sorted(flags - documented - negated - positive) == []


def test_the_top_help_gives_each_command_one_line_and_names_the_guides(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # a terminal's usual width
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        lines = [line for line in out.splitlines() if line.strip().startswith(name + " ")]
        assert len(lines) == 1, name
        following = out.splitlines()[out.splitlines().index(lines[0]) + 1]
        assert not following.startswith(" " * 24), f"{name}'s help runs over one line"
    from unetseg.cli.main import GUIDES

    assert "guides by task" in out
    guides = {p.stem for p in (ROOT / "docs").glob("*.md")}
    named = set(re.findall(r"[a-z-]+", GUIDES.split("lists them):")[1].split("unetseg COMMAND")[0]))
    assert guides <= named, guides - named
