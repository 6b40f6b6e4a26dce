"""Library errors speak in the caller's terms: a Python user never typed ``--resume``.

Every string in a ``raise`` of the library (outside the CLI) is checked for command-line flags; the CLI
translates the library's words (``resume=True``, ``data.seq_len``) into its flags (``commands/common.py``).
"""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "optimum_subnet"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
ALLOWED = {"--no-deps", "--force-reinstall"}  # parts of a pip command the user is told to run


def _raised_strings(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield sub.lineno, sub.value


def test_library_errors_name_no_command_line_flags():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "commands" in path.relative_to(PACKAGE).parts:
            continue
        for line, text in _raised_strings(ast.parse(path.read_text(encoding="utf-8"))):
            flags = set(FLAG.findall(text)) - ALLOWED
            if flags:
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} {sorted(flags)}")
    assert not offenders, offenders


def test_the_cli_translates_the_librarys_words():
    from optimum.commands.subnet.common import cli_terms

    assert cli_terms("pass resume=True to continue it or overwrite=True to start over") == \
        "pass --resume to continue it or --overwrite to start over"
    assert cli_terms("reduce data.num_samples or data.seq_len") == "reduce --num-samples or --seq-len"
    assert cli_terms('use device="cpu"') == "use --device cpu"
