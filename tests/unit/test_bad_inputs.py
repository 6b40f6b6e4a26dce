"""Each bad input of the README's "Bad input" table, really run through the CLI (in-process).

A case passes when the CLI prints exactly the table's line (one ``error:`` line, no traceback),
exits with the table's code, and leaves nothing behind but resumable checkpoints where the table
says so. See ``tests/bad_inputs.py`` (``python -m tests.bad_inputs`` regenerates the table).
"""

import pytest
import torch

from tests.bad_inputs import CASES, EXPECT, left_behind, readme_rows, run_case

pytestmark = pytest.mark.unit


def test_readme_lists_every_case_once():
    rows = readme_rows()
    assert sorted(rows) == sorted(case.tried for case in CASES)
    assert sorted(EXPECT) == sorted(case.id for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, tmp_path, monkeypatch):
    if case.needs_no_gpu and torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    code, line = run_case(case, tmp_path, monkeypatch)
    assert (line, code, left_behind(case)) == readme_rows()[case.tried]
