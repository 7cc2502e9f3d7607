"""The README's program runs as written: the first ``python`` block under "## Embedding" is
copied out and run as a script in an empty folder, so the documented API cannot drift from
the real one. The quick-start commands stay what they are."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Embedding"
CODE_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
QUICK_START = (
    "python3 dev.py demo     # set everything up and run the demo (cmdist demo)",
    "python3 dev.py test     # set everything up and run ruff, mypy and the whole test suite",
)
PRINTED = (
    # some events, not which ones: the printer is cancelled once wait() returns, whatever it
    # has not printed yet
    r"^  \d{4} [IWE] SMS_\w+ ",
    # the result, with the bytes that went over the wire
    r"^PS1\d{5} on PS1DP1\.CONTOSO\.COM: Installed v1, [1-9][\d,]* bytes$",
    r"^refused: .*NOSUCHDP\.CONTOSO\.COM",  # the typed error
)
"""Lines the program prints, as patterns."""
SUBPROCESS_TIMEOUT = 120.0
"""A safety net against a hung program, not a measure: it takes about a second."""


def _section(text: str, heading: str) -> str:
    """The README's text under ``heading``, up to the next heading of the same level."""
    _, found, rest = text.partition(f"\n{heading}\n")
    assert found, f"README.md has no {heading!r} section"
    return rest.split("\n## ", 1)[0]


def _embedding_program() -> str:
    block = CODE_BLOCK.search(_section(README.read_text(encoding="utf-8"), SECTION))
    assert block is not None, f"no ```python block under {SECTION!r} in README.md"
    return block[1]


def test_the_embedding_program_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "embedding.py"
    script.write_text(_embedding_program(), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert not proc.stderr, proc.stderr
    for line in PRINTED:
        assert re.search(line, out, re.MULTILINE), f"no line like {line!r} in:\n{out}"
    assert [p.name for p in tmp_path.iterdir()] == ["embedding.py"]  # none in the current folder


def test_the_quick_start_commands_stay() -> None:
    text = README.read_text(encoding="utf-8")
    assert "\n".join(QUICK_START) in _section(text, "## Quick start")
