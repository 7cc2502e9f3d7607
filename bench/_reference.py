"""The reference (``package-actions.md``): its flows, the log lines each quotes, and the
normalisation that lets a reference line and a cmdist log line be compared.

A quoted log line reads ``> COMPONENT 1234 (0x4d2) text`` (the component may be missing:
SMSDPProv.log's lines name none). Markdown decorations (``**bold**``, ``\\<``, ``\\\\``)
are undone before the text is normalised; both sides go through :func:`normalise`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from actors.status._catalog import DP_PROVIDER, LOG_FILES

__all__ = [
    "ENV_VAR",
    "FLOWS",
    "NOT_IMPLEMENTED",
    "RefLine",
    "find_reference",
    "normalise",
    "parse_flows",
]

ENV_VAR = "CMDIST_REFERENCE"

# Flow name (as the report names it) -> the reference's "## " heading.
FLOWS: Mapping[str, str] = {
    "create": "Create a package",
    "distribute": "Distribute a package to standard DP",
    "update": "Update a package",
    "redistribute": "Redistribute a package",
    "distribute_pull_dp": "Distribute a package to pull DP",
    "distribute_across_sites": "Distribute a package to DP across sites",
}

# The reference's other flows: reported as not implemented yet, never skipped silently
# (none left: every flow of the reference runs).
NOT_IMPLEMENTED: Mapping[str, str] = {}


class RefLine(NamedTuple):
    """One log line the reference quotes: the component, its text as the reference writes
    it (markdown undone), and the log file cmdist writes that component's lines to."""

    component: str
    text: str
    log: str
    step: str  # the "###"/"####" heading the line is quoted under


def find_reference() -> Path | None:
    """``../shared/reference/package-actions.md`` next to the repository, else
    ``$CMDIST_REFERENCE``; None when neither exists."""
    beside = Path(__file__).resolve().parents[2] / "shared" / "reference" / "package-actions.md"
    if beside.is_file():
        return beside
    env = os.environ.get(ENV_VAR)
    if env and Path(env).is_file():
        return Path(env)
    return None


_QUOTE = re.compile(r"^\s*>\s*(?P<comp>.*?)\s*\d+\s+\(0x[0-9a-fA-F]+\)\s+(?P<text>.*?)\s*$")


def _sections(markdown: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return out


def _unmarkdown(text: str) -> str:
    text = text.replace("**", "")
    text = re.sub(r"\\\\\\", r"\\\\", text)  # "\\\PS1DP2" is how the reference writes \\PS1DP2
    return re.sub(r"\\([<>|*_])", r"\1", text)


def _quoted(lines: list[str]) -> list[RefLine]:
    out: list[RefLine] = []
    step = ""
    for line in lines:
        if line.startswith("###"):
            step = line.lstrip("#").strip()
            continue
        m = _QUOTE.match(line)
        if m is None:
            continue
        comp = m["comp"] or DP_PROVIDER  # SMSDPProv.log's lines carry no component name
        out.append(RefLine(comp, _unmarkdown(m["text"]), LOG_FILES.get(comp, ""), step))
    return out


def parse_flows(markdown: str) -> dict[str, list[RefLine]]:
    """The quoted log lines of each flow of :data:`FLOWS`, in the reference's order."""
    sections = _sections(markdown)
    missing = [h for h in FLOWS.values() if h not in sections]
    if missing:
        raise ValueError(f"the reference has no section {missing!r}")
    return {flow: _quoted(sections[heading]) for flow, heading in FLOWS.items()}


# -- normalisation ------------------------------------------------------------------------

_STATMSG = re.compile(r"STATMSG:\s*ID=(\d+)", re.IGNORECASE)
_COMP = re.compile(r'COMP="([^"]*)"')

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\$\$<[^>]*>.*$"), ""),  # CMTrace: $$<component><time><thread=...>
    (
        re.compile(
            r"\{?[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}?"
        ),
        "<guid>",
    ),
    (re.compile(r'\["Display=[^\]]*"\]MSWNET:\["SMS_SITE=[^\]]*"\]\\\\[^\\\s]+\\*'), "<nal>"),
    (re.compile(r"'[^'\s]*\\[^']*'"), "'<path>'"),
    (re.compile(r"(?:[A-Za-z]:\\|\\\\)[^\s\]\['\"]*"), "<path>"),
    (re.compile(r"(?<![\w<>.])/[^\s\]\['\"/]+/[^\s\]\['\"]*"), "<path>"),  # POSIX
    (re.compile(r"\b(?:[A-Za-z0-9-]+\.){2,}[A-Za-z]{2,}\b"), "<server>"),
    (re.compile(r"\b[0-9A-Z]{3}SQ[A-Z0-9]{3}\b", re.IGNORECASE), "<sendrequest>"),
    # an application's content ID ("Content_<guid>.1") is a package's content ID here
    (re.compile(r"\bContent_<guid>", re.IGNORECASE), "<pkg>"),
    # sizes and rates before job IDs: "204864k", "13985442 bytes/sec" are numbers
    (re.compile(r"\b\d+(?=k\b)|\b\d+(?= bytes)"), "<n>"),
    (re.compile(r"\bJOBID\b|\b[0-9A-F]{8}\b"), "<job>"),
    (re.compile(r"<PackageID>|\bPackageID\b(?!=)|\b[A-Z][A-Z0-9]{2}[0-9A-F]{5}\b"), "<pkg>"),
    (re.compile(r"<HashString>|\b[0-9A-Fa-f]{32,}\b"), "<hash>"),
    (re.compile(r"\b[0-9A-F]{16}\b"), "<handle>"),  # "thread handle 0000000000002524"
    (re.compile(r"\b\d{4}/\d{2}/\d{2}\b|\b\d{1,2}/\d{1,2}/\d{4}\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\b"), "<time>"),
    (re.compile(r"\b\d+\s+\(0x[0-9A-F]+\)|\b0x[0-9A-F]+\s+\(\d+\)", re.IGNORECASE), "<tid>"),
    (re.compile(r"\b0x[0-9A-F]+\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"\b\d+\b"), "<n>"),
    (re.compile(r"\s+(?=\])"), ""),
    (re.compile(r"\s+"), " "),
)


def normalise(text: str) -> str:
    """The comparable form of a log line's text: a STATMSG becomes ``statmsg id=N comp=C``;
    anything else has its IDs, numbers, paths, names and times replaced by placeholders,
    CMTrace's ``~`` decorations stripped, whitespace collapsed, case folded."""
    m = _STATMSG.search(text)
    if m is not None:
        comp = _COMP.search(text)
        return f"statmsg id={m[1]} comp={comp[1] if comp else ''}".lower()
    text = text.strip().lstrip("~")
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return text.strip().rstrip("~").strip().lower()
