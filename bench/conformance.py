"""``python -m bench conformance [--json]``: cmdist's logs against the reference's, line by line.

Each one-site flow of ``../shared/reference/package-actions.md`` (create; distribute to a
standard DP; update; redistribute; distribute to the pull DP P01PDP1, the package on its
source DP first) runs on a fresh data root through the public API. The
log lines the reference quotes for that flow are compared, normalised (see
:func:`bench._reference.normalise`), with what cmdist wrote to the same component's log
(on every server) during the flow. Reported per flow: ``reference`` (quoted lines, minus
the :data:`EXCEPTIONS`), ``found`` (present in the right log), ``in_order`` (the longest
common subsequence of the reference's lines and each log, summed over the logs: order is
compared within a log, as there is no common clock across files) and ``missing``.

The setup of a flow (creating and distributing the package before an update, say) runs
in a first opening of the hierarchy; it is closed, which flushes the logs, their sizes are
noted, and the flow runs in a second opening: only what the flow appended is read.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors import Hierarchy
from actors.status import STATUS_TOPIC, StatusMessage
from bench._reference import NOT_IMPLEMENTED, RefLine, find_reference, normalise
from bench._reference import parse_flows as parse_reference
from bench._report import emit

SITE = "PS1"
DP1 = "PS1DP1.CONTOSO.COM"
DP2 = "PS1DP2.CONTOSO.COM"
# The reference's update flow updates a package held by these four DPs of PS1.
PULL_SITE, PULL_SOURCE, PULL_DP = "P01", "P01DP1.CONTOSO.COM", "P01PDP1.CONTOSO.COM"
ALL_DPS = ("PS1SITE.CONTOSO.COM", "PS1SYS.CONTOSO.COM", DP1, DP2)
# ... and the reference's update sends its DLT to sites PS2 and SS1.
OTHER_SITE_DPS = ("SS1DP1.CONTOSO.COM",)
TIME_SCALE = 0.001
_TIMEOUT = 30.0


class Exception_(msgspec.Struct, frozen=True):
    """Reference lines cmdist does not write on purpose: those of ``flow`` (None: every
    flow) whose text starts with ``starts`` and whose step heading contains ``step``."""

    flow: str | None
    starts: str  # the start of the line's text, as the reference writes it ("": any)
    reason: str
    step: str = ""
    occurrence: int = 0  # only the n-th such line of the flow (1-based; 0: every one)


_NO_ADMIN_SHARE = (
    "cmdist's DP threads open no connection to the DP (its ADMIN$ share): the sending thread"
    " does all the DP's I/O"
)
_PS2_ROUTE = (
    "the reference's PS1 sends to PS2 directly; in the default hierarchy PS2 is PS1's sibling"
    " under CS1 (that route is the distribute_across_sites flow): the update's DLT goes to"
    " PS1's child SS1"
)
_POLL = "the status poll (the backup path) finds the job already ended by the state message"
EXCEPTIONS: tuple[Exception_, ...] = (
    Exception_(
        None,
        "~Use drive E for storing the compressed package",
        "a Windows drive letter: cmdist stores compressed packages under the data root",
    ),
    Exception_(
        "create",
        "A program for package",
        "cmdist packages hold content only: they have no programs to add or remove",
    ),
    Exception_("update", "~Setting CMiniJob transfer root", _PS2_ROUTE, occurrence=1),
    *(
        Exception_("update", f"{start} PS100039 to site PS2", _PS2_ROUTE)
        for start in (
            "~Needs to send the compressed package for package",
            "~Sending a copy of package",
            "~Created minijob to send compressed copy of package",
        )
    ),
    Exception_(
        "update",
        "Performing cleanup prior to returning",
        _NO_ADMIN_SHARE,
    ),
    Exception_(
        "update",
        "Cancelling network connection to",
        _NO_ADMIN_SHARE,
    ),
    Exception_(
        "distribute_pull_dp",
        "",
        "a first distribution has no changed file: the signature download ('If applicable')"
        " runs on an update to a pull DP (tests/actors/test_flow_pulldp_faults.py)",
        step="Step 10",
    ),
    Exception_(
        "distribute_pull_dp",
        "ContentExecuteJob {C10457F9-DE3A-4B45-878C-345919AFF97E} (state: 5-Signature",
        "the signature step's end, on an update only (see Step 10)",
        step="Step 11",
    ),
    *(
        Exception_(
            "distribute_pull_dp",
            f"ContentExecuteJob {{{guid}",
            "the reference's second example, an application with two content items:"
            " cmdist packages are classic packages with one content each",
            step="Step 9",
        )
        for guid in ("55692006", "7175CD81")
    ),
    *(
        Exception_("distribute_pull_dp", starts, _POLL)
        for starts in (
            "Pull DP Sending thread starting for Job: 194",
            "~Finished sending SWD package P010000F",
            "Sent status to the distribution manager for pkg P010000F",
        )
    ),
    Exception_(
        "redistribute",
        "Content_",
        "PullDP.log: the reference's pull DP variant; pull DPs are not implemented yet",
    ),
)


class Excepted(msgspec.Struct, frozen=True):
    line: str
    reason: str


class FlowResult(msgspec.Struct, frozen=True):
    reference: int
    found: int
    in_order: int
    missing: list[str]
    excepted: list[Excepted]


# -- running the flows --------------------------------------------------------------------

Logs = dict[str, list[str]]  # log file name -> its lines' text, normalised, in order
Offsets = dict[Path, int]
_LOG_TEXT = re.compile(r"<!\[LOG\[(.*?)\]LOG\]!>", re.DOTALL)


def _log_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/logs/*.log"))


def _sizes(root: Path) -> Offsets:
    return {p: p.stat().st_size for p in _log_files(root)}


def _read_logs(root: Path, before: Offsets) -> Logs:
    """What each log gained since ``before``, normalised, by log file name (all servers)."""
    out: Logs = {}
    for path in _log_files(root):
        with open(path, "rb") as f:
            f.seek(before.get(path, 0))
            text = f.read().decode("utf-8", errors="replace")
        out.setdefault(path.name, []).extend(normalise(t) for t in _LOG_TEXT.findall(text))
    return out


def _source(work: Path, flow: str) -> Path:
    src = work / "source" / "Dummy1"
    src.mkdir(parents=True)
    # The file each flow of the reference shows: the pull DP flow's package holds one .msi.
    name = "ConfigMgrTools.msi" if flow == "distribute_pull_dp" else "Dummy1.txt"
    (src / name).write_text("cmdist conformance\n" * 64)
    return src


async def _processed(
    h: Hierarchy, create: Callable[[], Awaitable[str]], sites: Collection[str]
) -> str:
    """Run ``create`` and return its package ID once every one of ``sites``' DistMgrs
    raised 2301 for it (the creating site's too: DRS may bring the package to another site,
    which raises its 2301, before the creating site has stored and logged the version)."""
    seen: set[tuple[str, str]] = set()
    async with h.bus.subscribe(STATUS_TOPIC, buffer=10_000) as sub:
        pkg_id = await create()
        with anyio.fail_after(_TIMEOUT):
            async for msg in sub:
                if isinstance(msg, StatusMessage) and msg.message_id == 2301:
                    seen.add((msg.site, msg.attributes.get(400, "")))
                if all((site, pkg_id) in seen for site in sites):
                    return pkg_id
    raise RuntimeError(f"no 2301 for {pkg_id}")


Step = Callable[[Hierarchy, str], Awaitable[str]]


async def _open_run(data: Path, step: Step, pkg_id: str) -> str:
    async with Hierarchy.open(root=data, time_scale=TIME_SCALE) as h:
        return await step(h, pkg_id)


async def _run_flow(work: Path, setup: Sequence[Step], flow: Step) -> Logs:
    """The setup steps in one opening, then the flow in another: its logs only."""
    data = work / "data"
    pkg_id = ""
    if setup:

        async def run_setup(h: Hierarchy, pkg: str) -> str:
            for step in setup:
                pkg = await step(h, pkg)
            return pkg

        pkg_id = await _open_run(data, run_setup, pkg_id)
    before = _sizes(data)
    await _open_run(data, flow, pkg_id)
    return _read_logs(data, before)


def _create_step(src: Path, site: str = SITE, known_at: str | None = None) -> Step:
    async def create(h: Hierarchy, _: str) -> str:
        async def call() -> str:
            return (await h.create_package("Dummy1", src, site=site)).pkg_id

        return await _processed(h, call, {site, known_at or site})

    return create


def _distribute_step(dps: Sequence[str]) -> Step:
    async def distribute(h: Hierarchy, pkg_id: str) -> str:
        await h.distribute(pkg_id, list(dps))
        await h.wait(pkg_id, timeout=_TIMEOUT)
        return pkg_id

    return distribute


def _update_step(src: Path) -> Step:
    async def update(h: Hierarchy, pkg_id: str) -> str:
        # As in the reference, the package's site knows what its child sites store (their
        # Type 1 rows come back through DRS) before the update: they get a DLT.
        db = h.servers[SITE].db
        with anyio.fail_after(_TIMEOUT):
            for site in {dp[:3] for dp in OTHER_SITE_DPS}:
                while await db.site_version(pkg_id, site) < 1:
                    await anyio.sleep(0.01)
        (src / "Dummy1.txt").write_text("cmdist conformance, version 2\n" * 64)
        await h.update(pkg_id)
        await h.wait(pkg_id, timeout=_TIMEOUT)
        return pkg_id

    return update


def _redistribute_step(dp: str) -> Step:
    async def redistribute(h: Hierarchy, pkg_id: str) -> str:
        await h.redistribute(pkg_id, dp)
        await h.wait(pkg_id, timeout=_TIMEOUT)
        return pkg_id

    return redistribute


def _plan(flow: str, src: Path) -> tuple[list[Step], Step]:
    create = _create_step(src)
    if flow == "create":  # at the CAS, as the reference's; PS1 receives it through DRS
        return [], _create_step(src, site="CS1", known_at="PS1")
    if flow == "distribute":
        return [create], _distribute_step((DP1, DP2))
    if flow == "update":  # PS1's DPs and two other sites' (the DLT minijobs and 2333)
        return [create, _distribute_step((*ALL_DPS, *OTHER_SITE_DPS))], _update_step(src)
    if flow == "redistribute":
        return [create, _distribute_step((DP1, DP2))], _redistribute_step(DP1)
    if flow == "distribute_across_sites":  # created at the CAS, known at PS1 (DRS)
        return [_create_step(src, site="CS1", known_at="PS1")], _distribute_step((DP1,))
    if flow == "distribute_pull_dp":  # P01's package, on its source DP first
        setup = [_create_step(src, PULL_SITE), _distribute_step((PULL_SOURCE,))]
        return setup, _distribute_step((PULL_DP,))
    raise ValueError(f"unknown flow {flow!r}")


async def run_flow(flow: str) -> Logs:
    with tempfile.TemporaryDirectory(prefix=f"cmdist-conformance-{flow}-") as tmp:
        work = Path(tmp)
        setup, step = _plan(flow, _source(work, flow))
        return await _run_flow(work, setup, step)


# -- comparing ----------------------------------------------------------------------------


def _exception(flow: str, line: RefLine, seen: Counter[Exception_]) -> Exception_ | None:
    """The exception that covers the line (``seen``: how many lines each matched so far)."""
    for e in EXCEPTIONS:
        if e.flow in (None, flow) and line.text.startswith(e.starts) and e.step in line.step:
            seen[e] += 1
            if e.occurrence in (0, seen[e]):
                return e
    return None


_ELIDED = "…"  # the reference cuts a long line short with it: the rest is not given


def _matches(ref: str, line: str) -> bool:
    """A log line matches a normalised reference line: whole, or up to where it is elided."""
    if ref.endswith(_ELIDED):
        return line.startswith(ref[: -len(_ELIDED)].rstrip())
    return ref == line


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of reference lines a and log lines b."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if _matches(x, y) else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _found(ref: str, lines: set[str]) -> bool:
    if not ref.endswith(_ELIDED):
        return ref in lines
    return any(_matches(ref, line) for line in lines)


def compare(
    flow: str, reference: Sequence[RefLine], logs: Mapping[str, Sequence[str]]
) -> FlowResult:
    checked: list[RefLine] = []
    excepted: list[Excepted] = []
    seen: Counter[Exception_] = Counter()
    for line in reference:
        e = _exception(flow, line, seen)
        if e is None:
            checked.append(line)
        else:
            excepted.append(Excepted(line.text, e.reason))
    present = {name: set(lines) for name, lines in logs.items()}
    missing = [r.text for r in checked if not _found(normalise(r.text), present.get(r.log, set()))]
    by_log: dict[str, list[str]] = {}
    for r in checked:
        by_log.setdefault(r.log, []).append(normalise(r.text))
    in_order = sum(_lcs(refs, logs.get(name, [])) for name, refs in by_log.items())
    return FlowResult(len(checked), len(checked) - len(missing), in_order, missing, excepted)


# -- the report ---------------------------------------------------------------------------


async def _all(flows: Mapping[str, list[RefLine]]) -> dict[str, FlowResult]:
    return {flow: compare(flow, refs, await run_flow(flow)) for flow, refs in flows.items()}


def report(flows: Mapping[str, FlowResult]) -> dict[str, Any]:
    return {
        "flows": {name: msgspec.to_builtins(r) for name, r in flows.items()},
        "not_implemented": sorted(NOT_IMPLEMENTED.values()),
    }


def _rows(flows: Mapping[str, FlowResult]) -> list[list[object]]:
    rows: list[list[object]] = []
    for name, r in flows.items():
        pct = f"{100 * r.in_order / r.reference:.0f} %" if r.reference else "-"
        rows.append([name, r.reference, r.found, r.in_order, len(r.excepted), pct])
    rows += [[name, "-", "-", "-", "-", "not implemented yet"] for name in NOT_IMPLEMENTED]
    return rows


def _details(flows: Mapping[str, FlowResult]) -> str:
    out: list[str] = []
    for name, r in flows.items():
        out += [f"\n{name}: missing {len(r.missing)}"] + [f"  - {m}" for m in r.missing]
        out += [f"  (excepted) {e.line}  -- {e.reason}" for e in r.excepted]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench conformance", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    path = find_reference()
    if path is None:
        print(
            "conformance: the reference (../shared/reference/package-actions.md or"
            " $CMDIST_REFERENCE) is not there",
            file=sys.stderr,
        )
        return 2
    refs = parse_reference(path.read_text(encoding="utf-8"))
    results = anyio.run(_all, refs)
    print(_details(results), flush=True)
    emit(
        "Conformance with package-actions.md (log lines, normalised)",
        ["flow", "reference", "found", "in_order", "excepted", "in order %"],
        _rows(results),
        report(results),
        args.json,
    )
    return 0
