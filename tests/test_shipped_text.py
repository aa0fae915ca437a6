"""Nothing a user receives names a path of one machine or talks about how the project is organised.

Shipped text is the README, the docs site, the package (code, help texts, model card, reports beside the
bundled models), the benchmarks and the release tools.  Each pattern below is narrow on purpose: "session"
alone is an onnxruntime term and "helper" a programming one, so only the phrasings that describe work
(``this session's changes``, ``issue 12``, ``round of work``) are refused.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SHIPPED = [
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "pyproject.toml",
    "mkdocs.yml",
    "docs",
    "mnist_onnx",
    "benchmarks",
    "tools",
]
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".txt",
    ".json",
    ".toml",
    ".yml",
    ".yaml",
    ".sh",
    ".cfg",
    ".ini",
    ".html",
    ".js",
    ".css",
    ".svg",
    "",
}

MACHINE_PATHS = re.compile(r"(?<![\w.])/(?:work|root)/|(?<![\w.])/home/(?!<)[A-Za-z0-9_.-]+/")
TEAM_WORDS = re.compile(
    r"\bissues? #?\d{1,2}\b"  # an issue of this project; other projects' issues have their name and a longer number
    r"|\b(?:this|that|the previous|previous|an earlier|earlier|the next|next|a later|later) session\b"
    r"|\bsession's (?:work|changes)\b"
    r"|\brounds? of work\b"
    r"|\b(?:this|that|the previous|previous|an earlier|earlier|the next|next|a later|later) round\b(?! trip)"
    r"|\bhelpers? (?:session|engineer|branch)s?\b"
    r"|\bthe lead engineer\b|\bCEO\b",
    re.IGNORECASE,
)


def _shipped_files() -> list[Path]:
    files = []
    for name in SHIPPED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and p.suffix in TEXT_SUFFIXES
                and "__pycache__" not in p.parts
                and not any(part.startswith(".") for part in p.parts)
            ]
    return files


def _offences(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern in (MACHINE_PATHS, TEAM_WORDS):
            match = pattern.search(line)
            if match:
                found.append(f"line {number}: {match.group(0)!r} in {line.strip()[:100]!r}")
    return found


def test_the_patterns_catch_what_they_are_for_and_nothing_else() -> None:
    bad = [
        "python bench.py /work/data/test.csv",
        "see /root/models/x.onnx",
        "cd /home/alice/mnist",
        "before this session's changes",
        "the targets of issue 5",
        "Issue #12 asks for it",
        "an earlier round of work",
        "the previous round measured 3x",
        "a helper session wrote it",
    ]
    good = [
        "one onnxruntime session per worker",
        "the session is created once",
        "tf2onnx issue #2448",
        "onnx.helper.make_node",
        "metadata helpers",
        "5 interleaved rounds",
        "the best round",
        "/home/<user>/.cache",
        "data/test.csv",
        "a round trip through the file",
        "network/work/x",
        "rounds of 3 timed calls",
    ]
    assert all(_offences(text) for text in bad), [text for text in bad if not _offences(text)]
    assert not any(_offences(text) for text in good), [text for text in good if _offences(text)]


def test_shipped_files_name_no_machine_path_and_no_team_words() -> None:
    files = _shipped_files()
    assert len(files) > 30  # the package, README and benchmarks at least: a wrong ROOT must not pass silently
    problems = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary data (models, images) carries no prose
        problems += [f"{path.relative_to(ROOT)} {offence}" for offence in _offences(text)]
    assert not problems, "\n".join(problems)


def _subcommands() -> list[str]:
    from mnist_onnx.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps the subcommands only here
        if action.choices and isinstance(action.choices, dict):
            return sorted(action.choices)
    raise AssertionError("mnist-onnx has no subcommands")


@pytest.mark.parametrize("command", ["", *_subcommands()])
def test_help_texts_name_no_machine_path_and_no_team_words(command: str) -> None:
    argv = [sys.executable, "-m", "mnist_onnx", *([command] if command else []), "--help"]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert not _offences(done.stdout), _offences(done.stdout)
