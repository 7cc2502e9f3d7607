"""``hierarchy.toml``: sites, distribution points, links and settings, as typed frozen Structs.

:func:`load_hierarchy` refuses a bad file with :class:`~actors.errors.HierarchyConfigError`
naming the file, the key (``site[4].parent``) and the problem.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from actors.errors import HierarchyConfigError, UnknownDistributionPoint, UnknownSite

__all__ = [
    "DistributionPoint",
    "HierarchyConfig",
    "Link",
    "Settings",
    "Site",
    "SiteType",
    "load_hierarchy",
    "nal_path",
]

SiteType = Literal["cas", "primary", "secondary"]

Count = Annotated[int, Meta(ge=1)]
Capacity = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0)]


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Settings(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every knob with the product's default. Intervals are seconds of simulated time."""

    time_scale: Annotated[float, Meta(gt=0)] = 1.0
    data_root: str = "data"
    package_processing_threads: Count = 3
    threads_per_package: Count = 5
    distribution_retry_count: Capacity = 100
    distribution_retry_delay: Seconds = 1800.0
    pkgxfer_max_packages: Count = 3
    pkgxfer_threads_per_package: Count = 5
    sending_threads_per_site: Count = 3
    sending_threads_total: Count = 5
    sender_retry_count: Capacity = 2
    sender_retry_delay: Seconds = 60.0
    despooling_threads: Count = 3
    despooler_retry_delay: Seconds = 300.0
    pulldp_max_active_jobs: Capacity = 50
    pulldp_notification_attempts: Count = 30
    pulldp_retry_delay: Seconds = 1200.0
    pulldp_status_polls: Count = 72
    pulldp_polling_delay: Seconds = 3600.0
    smsdbmon_poll_interval: Annotated[float, Meta(gt=0)] = 60.0
    scheduler_poll_interval: Annotated[float, Meta(gt=0)] = 60.0
    replication_delay: Seconds = 5.0


class Site(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    code: Annotated[str, Meta(pattern=r"^[A-Z0-9]{3}$")]
    type: SiteType
    server: Annotated[str, Meta(min_length=1)]
    name: str = ""
    parent: str | None = None


class DistributionPoint(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, Meta(min_length=1)]
    site: str
    pull: bool = False
    sources: tuple[str, ...] = ()
    """Pull DP only: source DPs, best rank first."""
    max_active_jobs: Capacity | None = None
    """Pull DP only: overrides ``settings.pulldp_max_active_jobs``."""

    @property
    def nal_path(self) -> str:
        return nal_path(self.name, self.site)


class Link(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A network path between two sites or from a site (or a source DP) to a DP."""

    from_: str = msgspec.field(name="from")
    to: str
    bandwidth: Annotated[int, Meta(gt=0)]
    """Bytes per second."""
    latency: Seconds = 0.0
    addresses: tuple[str, ...] = ()
    # fault injection
    down: bool = False
    fail_probability: Annotated[float, Meta(ge=0, le=1)] = 0.0
    cut_after_bytes: Capacity | None = None
    """Cut the next transfer after this many bytes (the transfer resumes on retry)."""
    slowdown: Annotated[float, Meta(ge=1)] = 1.0

    @property
    def ends(self) -> frozenset[str]:
        return frozenset((self.from_, self.to))


class _File(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    settings: Settings = msgspec.field(default_factory=Settings)
    site: tuple[Site, ...] = ()
    dp: tuple[DistributionPoint, ...] = ()
    link: tuple[Link, ...] = ()


def nal_path(server: str, site: str) -> str:
    """The NAL path the site database names a DP by, in the reference's form."""
    return f'["Display=\\\\{server}\\"]MSWNET:["SMS_SITE={site}"]\\\\{server}\\'


class HierarchyConfig(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    settings: Settings
    sites: tuple[Site, ...]
    dps: tuple[DistributionPoint, ...]
    links: tuple[Link, ...]

    @property
    def data_root(self) -> Path:
        return Path(self.settings.data_root)

    def site(self, code: str) -> Site:
        for s in self.sites:
            if s.code == code:
                return s
        raise UnknownSite(code)

    def dp(self, name: str) -> DistributionPoint:
        for d in self.dps:
            if d.name.upper() == name.upper():
                return d
        raise UnknownDistributionPoint(name)

    def dps_of(self, code: str) -> tuple[DistributionPoint, ...]:
        return tuple(d for d in self.dps if d.site == code)

    def children(self, code: str) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.parent == code)

    def ancestors(self, code: str) -> tuple[str, ...]:
        """Parent, grandparent, ... up to the top site."""
        out: list[str] = []
        parent = self.site(code).parent
        while parent is not None:
            out.append(parent)
            parent = self.site(parent).parent
        return tuple(out)

    def tree_path(self, a: str, b: str) -> tuple[str, ...]:
        """Site codes from ``a`` to ``b`` along the parent chain, both ends included."""
        up_a = (a, *self.ancestors(a))
        up_b = (b, *self.ancestors(b))
        common = next(c for c in up_a if c in up_b)
        return up_a[: up_a.index(common) + 1] + tuple(reversed(up_b[: up_b.index(common)]))

    def link(self, a: str, b: str) -> Link | None:
        ends = frozenset((a, b))
        return next((lk for lk in self.links if lk.ends == ends), None)

    def server_root(self, server: str) -> Path:
        """The folder of a site server or DP under the data root."""
        return self.data_root / server


def load_hierarchy(path: str | Path, *, root: str | Path | None = None) -> HierarchyConfig:
    """Read and check a hierarchy file. ``root`` overrides ``settings.data_root``.

    A relative data root is taken relative to the file's folder.
    """
    path = Path(path)
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise HierarchyConfigError(file, "", f"cannot read the file: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise HierarchyConfigError(file, "", f"not valid TOML: {e}") from e
    try:
        parsed = msgspec.convert(raw, _File)
    except msgspec.ValidationError as e:
        key, problem = _split_validation_error(str(e))
        raise HierarchyConfigError(file, key, problem) from e
    for key, problem in _problems(parsed):
        raise HierarchyConfigError(file, key, problem)
    data_root = Path(root) if root is not None else Path(parsed.settings.data_root)
    if not data_root.is_absolute():
        data_root = (path.parent if root is None else Path.cwd()) / data_root
    settings = msgspec.structs.replace(parsed.settings, data_root=str(data_root.resolve()))
    return HierarchyConfig(
        file=file, settings=settings, sites=parsed.site, dps=parsed.dp, links=parsed.link
    )


_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"(?:unknown|missing required) field `(?P<field>[^`]+)`")


def _split_validation_error(message: str) -> tuple[str, str]:
    m = _AT.match(message)
    assert m is not None  # the pattern matches any string
    path = (m["path"] or "").lstrip(".")
    problem = m["problem"]
    if (f := _FIELD.search(problem)) is not None:
        path = f"{path}.{f['field']}" if path else f["field"]
    return path, problem


def _problems(f: _File) -> Iterator[tuple[str, str]]:
    """Each structural problem of the hierarchy, as (key, problem); the loader reports the first."""
    codes: dict[str, int] = {}
    for i, s in enumerate(f.site):
        if s.code in codes:
            yield f"site[{i}].code", f"duplicate site code {s.code!r} (also site[{codes[s.code]}])"
        codes[s.code] = i
    servers: dict[str, str] = {}
    for i, s in enumerate(f.site):
        if s.server.upper() in servers:
            yield (
                f"site[{i}].server",
                f"server {s.server!r} already serves site {servers[s.server.upper()]!r}",
            )
        servers[s.server.upper()] = s.code
    by_code = {s.code: s for s in f.site}
    for i, s in enumerate(f.site):
        if s.parent is None:
            continue
        if s.parent not in by_code:
            yield f"site[{i}].parent", f"parent {s.parent!r} of site {s.code!r} is not a site code"
        elif s.parent == s.code:
            yield f"site[{i}].parent", f"site {s.code!r} is its own parent"
    for i, s in enumerate(f.site):
        seen = [s.code]
        parent = s.parent
        while parent is not None and parent in by_code:
            if parent in seen:
                yield f"site[{i}].parent", "parent cycle: " + " -> ".join([*seen, parent])
                break
            seen.append(parent)
            parent = by_code[parent].parent
    cas = [s for s in f.site if s.type == "cas"]
    if len(cas) > 1:
        yield f"site[{f.site.index(cas[1])}].type", "a hierarchy has at most one CAS"
    for i, s in enumerate(f.site):
        parent_site = by_code.get(s.parent) if s.parent is not None else None
        if s.type == "cas" and s.parent is not None:
            yield f"site[{i}].parent", f"CAS {s.code!r} cannot have a parent"
        elif s.type == "secondary" and s.parent is None:
            yield f"site[{i}].parent", f"secondary site {s.code!r} needs a primary parent"
        elif s.type == "primary" and s.parent is None and cas:
            yield f"site[{i}].parent", f"primary site {s.code!r} needs the CAS as parent"
        elif parent_site is not None and parent_site.type == "secondary":
            yield (
                f"site[{i}].parent",
                f"site {s.code!r} is under secondary site {parent_site.code!r};"
                " a secondary site cannot have child sites",
            )
        elif s.type == "secondary" and parent_site is not None and parent_site.type != "primary":
            yield f"site[{i}].parent", f"secondary site {s.code!r} must be under a primary site"
        elif s.type == "primary" and parent_site is not None and parent_site.type != "cas":
            yield f"site[{i}].parent", f"primary site {s.code!r} must be under the CAS"
    names: dict[str, int] = {}
    for i, d in enumerate(f.dp):
        if d.name.upper() in names:
            yield (
                f"dp[{i}].name",
                f"duplicate DP name {d.name!r} (also dp[{names[d.name.upper()]}])",
            )
        names[d.name.upper()] = i
        if d.site not in by_code:
            yield f"dp[{i}].site", f"site {d.site!r} of DP {d.name!r} is not a site code"
        elif by_code[d.site].type == "cas":
            yield f"dp[{i}].site", f"the CAS {d.site!r} cannot hold distribution points"
        owner = servers.get(d.name.upper())
        if owner is not None and owner != d.site:
            yield f"dp[{i}].site", f"{d.name!r} is the site server of {owner!r}, not of {d.site!r}"
    by_dp = {d.name.upper(): d for d in f.dp}
    for i, d in enumerate(f.dp):
        if not d.pull:
            if d.sources:
                yield f"dp[{i}].sources", f"DP {d.name!r} is not a pull DP and cannot have sources"
            if d.max_active_jobs is not None:
                yield f"dp[{i}].max_active_jobs", f"DP {d.name!r} is not a pull DP"
            continue
        if not d.sources:
            yield f"dp[{i}].sources", f"pull DP {d.name!r} needs at least one source DP"
        seen_sources: set[str] = set()
        for j, src in enumerate(d.sources):
            key = f"dp[{i}].sources[{j}]"
            if src.upper() == d.name.upper():
                yield key, f"pull DP {d.name!r} cannot be its own source"
            elif src.upper() not in by_dp:
                yield key, f"source {src!r} of pull DP {d.name!r} is not a DP"
            elif src.upper() in seen_sources:
                yield key, f"source {src!r} is listed twice"
            seen_sources.add(src.upper())
    pairs: dict[frozenset[str], int] = {}
    for i, lk in enumerate(f.link):
        for end, value in (("from", lk.from_), ("to", lk.to)):
            if value not in by_code and value.upper() not in by_dp:
                yield f"link[{i}].{end}", f"{value!r} is neither a site code nor a DP name"
        if lk.from_.upper() == lk.to.upper():
            yield f"link[{i}].to", f"link from {lk.from_!r} to itself"
        ends = frozenset((lk.from_, lk.to))
        if ends in pairs:
            yield (
                f"link[{i}]",
                f"a link between {lk.from_!r} and {lk.to!r} exists already (link[{pairs[ends]}])",
            )
        pairs[ends] = i
