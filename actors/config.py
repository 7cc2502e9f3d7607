"""``hierarchy.toml``: sites, distribution points, links and settings, as typed frozen Structs.

:func:`load_hierarchy` refuses a bad file with :class:`~actors.errors.HierarchyConfigError`
naming the file, the key (``site[4].parent``) and the problem. :func:`check_hierarchy` runs
the same checks on a :class:`HierarchyConfig` built in code (msgspec checks bounds only when
it decodes, never in a Struct's constructor). :func:`default_hierarchy` is the hierarchy cmdist
ships, package data of ``actors`` (a wheel install has it too).

No data root is ever assumed: the packaged default sets none, and
:meth:`HierarchyConfig.require_data_root` refuses a config without one rather than writing to
the current folder.
"""

from __future__ import annotations

import importlib.resources
import math
import re
import tomllib
from collections.abc import Iterator
from importlib.resources.abc import Traversable
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
    "SiteKind",
    "check_hierarchy",
    "default_hierarchy",
    "load_hierarchy",
    "nal_path",
    "server_of_nal",
]

SiteKind = Literal["cas", "primary", "secondary"]

IN_CODE = "<in code>"
"""The ``file`` errors name for a :class:`HierarchyConfig` built in code."""

DEFAULT_HIERARCHY = "hierarchy.toml"
"""The packaged default's resource name in ``actors`` (the repository links to it)."""

MAX_THREADS = 1000
"""Per thread setting: every thread is a task started when the hierarchy opens."""
MAX_PKGXFER_WORKERS = 10_000
"""PkgXferMgr starts max_packages x threads_per_package workers."""
MAX_RETRIES = 1_000_000
MAX_PULL_JOBS = 100_000

Threads = Annotated[int, Meta(ge=1, le=MAX_THREADS)]
Count = Annotated[int, Meta(ge=1, le=MAX_RETRIES)]
Retries = Annotated[int, Meta(ge=0, le=MAX_RETRIES)]
Jobs = Annotated[int, Meta(ge=0, le=MAX_PULL_JOBS)]
Capacity = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0)]
"""Finite too: :func:`_not_finite` refuses inf (the bound refuses nan already)."""


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Settings(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every knob with the product's default. Intervals are seconds of simulated time."""

    time_scale: Annotated[float, Meta(gt=0)] = 1.0
    data_root: str | None = None
    """Where every server keeps its files. None (the default): the caller gives one; relative
    in a file: relative to the file's folder, so a run never writes to the current folder."""
    package_processing_threads: Threads = 3
    threads_per_package: Threads = 5
    distribution_retry_count: Retries = 100
    distribution_retry_delay: Seconds = 1800.0
    pkgxfer_max_packages: Threads = 3
    pkgxfer_threads_per_package: Threads = 5
    sending_threads_per_site: Threads = 3
    sending_threads_total: Threads = 5
    sender_retry_count: Retries = 2
    sender_retry_delay: Seconds = 60.0
    despooling_threads: Threads = 3
    despooler_retry_delay: Seconds = 300.0
    despooler_poll_interval: Annotated[float, Meta(gt=0)] = 5.0
    pulldp_max_active_jobs: Jobs = 50
    pulldp_notification_attempts: Count = 30
    pulldp_retry_delay: Seconds = 1200.0
    pulldp_status_polls: Count = 72
    pulldp_polling_delay: Seconds = 3600.0
    smsdbmon_poll_interval: Annotated[float, Meta(gt=0)] = 60.0
    scheduler_poll_interval: Annotated[float, Meta(gt=0)] = 60.0
    replication_delay: Seconds = 120.0
    content_validation_interval: Seconds | None = None
    """Validate every DP's installed content this often (the product's content validation
    schedule, weekly by default there); None (the default here): only on demand."""


class Site(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    code: Annotated[str, Meta(pattern=r"^[A-Z0-9]{3}$")]
    type: SiteKind
    server: Annotated[str, Meta(min_length=1)]
    name: str = ""
    parent: str | None = None


class DistributionPoint(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, Meta(min_length=1)]
    site: str
    pull: bool = False
    sources: tuple[str, ...] = ()
    """Pull DP only: source DPs, best rank first."""
    max_active_jobs: Jobs | None = None
    """Pull DP only: overrides ``settings.pulldp_max_active_jobs``."""
    priority: Annotated[int, Meta(ge=0, le=0xFFFF)] = 200
    """The DP's priority among the DPs a package goes to ("DPPriority: 200"; lower first)."""

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


def server_of_nal(nal: str) -> str:
    """The server a NAL path names (the inverse of :func:`nal_path`; a path in another
    form is returned as it is)."""
    _, sep, tail = nal.rstrip("\\").rpartition("\\\\")
    return tail if sep else nal


class HierarchyConfig(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    settings: Settings
    sites: tuple[Site, ...]
    dps: tuple[DistributionPoint, ...]
    links: tuple[Link, ...]

    @property
    def data_root(self) -> Path:
        """The data root; :meth:`require_data_root` (which raises when there is none)."""
        return self.require_data_root()

    def require_data_root(self) -> Path:
        """The data root, or :class:`~actors.errors.HierarchyConfigError` when the config has
        none: nothing is written before a caller has said where (no ``./data`` appearing in
        whatever folder a service was started from, nothing inside an installed package)."""
        if self.settings.data_root is None:
            raise HierarchyConfigError(
                self.file or IN_CODE,
                "settings.data_root",
                "no data root: pass root= (Hierarchy.open, load_hierarchy, cmdist --root)"
                " or set settings.data_root",
            )
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
        """The folder of a site server or DP under the data root (which it requires)."""
        return self.require_data_root() / server


def load_hierarchy(
    path: str | Path | None = None, *, root: str | Path | None = None
) -> HierarchyConfig:
    """Read and check a hierarchy file; ``None``: the packaged :func:`default_hierarchy`.

    ``root`` overrides ``settings.data_root`` (relative: to the current folder, as any path
    argument); a relative ``settings.data_root`` is relative to the file's folder, so the
    same file means the same root from wherever it is loaded.
    """
    if path is None:
        return default_hierarchy(root=root)
    path = Path(path)
    return _parse(path, str(path), folder=path.parent, root=root)


def default_hierarchy(*, root: str | Path | None = None) -> HierarchyConfig:
    """The hierarchy cmdist ships: the reference's CAS, three primaries and a secondary with
    their DPs. Read with :mod:`importlib.resources`, so an installed wheel finds it as an
    editable checkout does. It sets no data root: give ``root`` here or to the facade."""
    resource = importlib.resources.files("actors").joinpath(DEFAULT_HIERARCHY)
    return _parse(resource, str(resource), folder=None, root=root)


def _parse(
    source: Traversable, file: str, *, folder: Path | None, root: str | Path | None
) -> HierarchyConfig:
    """``source`` read, decoded and checked; its data root made absolute (``folder``: the
    file's folder, None for the packaged default, whose folder never becomes a data root)."""
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as e:
        raise HierarchyConfigError(file, "", f"cannot read the file: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise HierarchyConfigError(file, "", f"not valid TOML: {e}") from e
    parsed = _checked(raw, file)
    data_root = _absolute_root(parsed.settings.data_root, folder, root)
    settings = msgspec.structs.replace(parsed.settings, data_root=data_root)
    return HierarchyConfig(
        file=file, settings=settings, sites=parsed.site, dps=parsed.dp, links=parsed.link
    )


def _absolute_root(in_file: str | None, folder: Path | None, root: str | Path | None) -> str | None:
    """``root`` (against the current folder), else the file's own data root (against the
    file's folder), else None: the caller must still give one."""
    if root is not None:
        return str(Path(root).resolve())
    if in_file is None or folder is None:
        return None
    return str((folder / in_file).resolve())


def check_hierarchy(config: HierarchyConfig) -> HierarchyConfig:
    """``config`` if :func:`load_hierarchy` would have taken it as a file; otherwise
    :class:`~actors.errors.HierarchyConfigError` (file ``<in code>`` when ``config.file`` is
    empty). For a config built or changed in code, whose Structs msgspec never checked."""
    file = config.file or IN_CODE
    raw = msgspec.to_builtins(
        _File(settings=config.settings, site=config.sites, dp=config.dps, link=config.links)
    )
    _checked(raw, file)
    return config


def _checked(raw: object, file: str) -> _File:
    """The file's structure decoded with every bound checked, then every cross-field rule."""
    try:
        parsed = msgspec.convert(raw, _File)
    except msgspec.ValidationError as e:
        key, problem = _split_validation_error(str(e))
        raise HierarchyConfigError(file, key, problem) from e
    for key, problem in _problems(parsed):
        raise HierarchyConfigError(file, key, problem)
    return parsed


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


Problem = tuple[str, str]
"""(key, what is wrong): ``("dp[2].name", "DP name '../x' is not a host name ...")``."""


def _problems(f: _File) -> Iterator[Problem]:
    """Each problem of the hierarchy, as (key, problem); the loader reports the first.

    One generator per concern, in the order a reader fixes them: sites, then DPs, then links
    and settings."""
    by_code = {s.code: s for s in f.site}
    yield from _no_sites(f)
    yield from _site_code_problems(f)
    yield from _server_problems(f)
    yield from _parent_problems(f, by_code)
    yield from _cycle_problems(f, by_code)
    yield from _site_type_problems(f, by_code)
    yield from _dp_problems(f, by_code)
    yield from _pull_dp_problems(f)
    yield from _link_problems(f, by_code)
    yield from _settings_problems(f)


def _no_sites(f: _File) -> Iterator[Problem]:
    if not f.site:
        yield "site", "no sites: a hierarchy needs at least one [[site]]"


def _site_code_problems(f: _File) -> Iterator[Problem]:
    codes: dict[str, int] = {}
    for i, s in enumerate(f.site):
        if s.code in codes:
            yield f"site[{i}].code", f"duplicate site code {s.code!r} (also site[{codes[s.code]}])"
        codes[s.code] = i


def _server_problems(f: _File) -> Iterator[Problem]:
    servers: dict[str, str] = {}
    for i, s in enumerate(f.site):
        if (bad := _host_name_problem(s.server)) is not None:
            yield f"site[{i}].server", f"server name {s.server!r} {bad}"
        if s.server.upper() in servers:
            yield (
                f"site[{i}].server",
                f"server {s.server!r} already serves site {servers[s.server.upper()]!r}",
            )
        servers[s.server.upper()] = s.code


def _parent_problems(f: _File, by_code: dict[str, Site]) -> Iterator[Problem]:
    for i, s in enumerate(f.site):
        if s.parent is None:
            continue
        if s.parent not in by_code:
            yield f"site[{i}].parent", f"parent {s.parent!r} of site {s.code!r} is not a site code"
        elif s.parent == s.code:
            yield f"site[{i}].parent", f"site {s.code!r} is its own parent"


def _cycle_problems(f: _File, by_code: dict[str, Site]) -> Iterator[Problem]:
    for i, s in enumerate(f.site):
        seen = [s.code]
        parent = s.parent
        while parent is not None and parent in by_code:
            if parent in seen:
                yield f"site[{i}].parent", "parent cycle: " + " -> ".join([*seen, parent])
                break
            seen.append(parent)
            parent = by_code[parent].parent


def _site_type_problems(f: _File, by_code: dict[str, Site]) -> Iterator[Problem]:
    cas = [s for s in f.site if s.type == "cas"]
    if len(cas) > 1:
        yield f"site[{f.site.index(cas[1])}].type", "a hierarchy has at most one CAS"
    for i, s in enumerate(f.site):
        parent = by_code.get(s.parent) if s.parent is not None else None
        problem = _site_type_problem(s, parent, has_cas=bool(cas))
        if problem is not None:
            yield f"site[{i}].parent", problem


def _site_type_problem(s: Site, parent: Site | None, *, has_cas: bool) -> str | None:
    """What is wrong with a site's place in the tree, given its type and its parent's."""
    if s.type == "cas" and s.parent is not None:
        return f"CAS {s.code!r} cannot have a parent"
    if s.type == "secondary" and s.parent is None:
        return f"secondary site {s.code!r} needs a primary parent"
    if s.type == "primary" and s.parent is None and has_cas:
        return f"primary site {s.code!r} needs the CAS as parent"
    if parent is None:
        return None
    if parent.type == "secondary":
        return (
            f"site {s.code!r} is under secondary site {parent.code!r};"
            " a secondary site cannot have child sites"
        )
    if s.type == "secondary" and parent.type != "primary":
        return f"secondary site {s.code!r} must be under a primary site"
    if s.type == "primary" and parent.type != "cas":
        return f"primary site {s.code!r} must be under the CAS"
    return None


def _dp_problems(f: _File, by_code: dict[str, Site]) -> Iterator[Problem]:
    servers = {s.server.upper(): s.code for s in f.site}
    names: dict[str, int] = {}
    for i, d in enumerate(f.dp):
        if (bad := _host_name_problem(d.name)) is not None:
            yield f"dp[{i}].name", f"DP name {d.name!r} {bad}"
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


def _pull_dp_problems(f: _File) -> Iterator[Problem]:
    by_dp = {d.name.upper() for d in f.dp}
    for i, d in enumerate(f.dp):
        if not d.pull:
            if d.sources:
                yield f"dp[{i}].sources", f"DP {d.name!r} is not a pull DP and cannot have sources"
            if d.max_active_jobs is not None:
                yield f"dp[{i}].max_active_jobs", f"DP {d.name!r} is not a pull DP"
            continue
        if not d.sources:
            yield f"dp[{i}].sources", f"pull DP {d.name!r} needs at least one source DP"
        seen: set[str] = set()
        for j, src in enumerate(d.sources):
            key = f"dp[{i}].sources[{j}]"
            if src.upper() == d.name.upper():
                yield key, f"pull DP {d.name!r} cannot be its own source"
            elif src.upper() not in by_dp:
                yield key, f"source {src!r} of pull DP {d.name!r} is not a DP"
            elif src.upper() in seen:
                yield key, f"source {src!r} is listed twice"
            seen.add(src.upper())


def _link_problems(f: _File, by_code: dict[str, Site]) -> Iterator[Problem]:
    by_dp = {d.name.upper() for d in f.dp}
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
        yield from _not_finite(f"link[{i}]", lk)


def _settings_problems(f: _File) -> Iterator[Problem]:
    yield from _not_finite("settings", f.settings)
    s = f.settings
    workers = s.pkgxfer_max_packages * s.pkgxfer_threads_per_package
    if workers > MAX_PKGXFER_WORKERS:
        yield (
            "settings.pkgxfer_threads_per_package",
            f"pkgxfer_max_packages x pkgxfer_threads_per_package is {workers:,} sending threads;"
            f" at most {MAX_PKGXFER_WORKERS:,}",
        )


def _not_finite(prefix: str, struct: msgspec.Struct) -> Iterator[Problem]:
    """Every float field that is inf (msgspec's bounds refuse nan but let inf through):
    an infinite delay or time scale means nothing ever happens."""
    for field in msgspec.structs.fields(struct):
        value = getattr(struct, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            yield f"{prefix}.{field.encode_name}", f"{value} is not a finite number"


_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MAX_HOST_NAME = 253


def _host_name_problem(name: str) -> str | None:
    """Why ``name`` is not a host name, or None. Server and DP names become folders under
    the data root, so only host names (``PS1DP1.CONTOSO.COM``) are taken: no separators,
    no ``..``, nothing absolute, nothing that could land outside the root."""
    if len(name) > MAX_HOST_NAME:
        return f"is not a host name: {len(name)} characters, at most {MAX_HOST_NAME}"
    if not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return (
            "is not a host name: dot-separated labels of letters, digits and '-'"
            " (not first or last in a label), no '/', '\\' or '..'"
        )
    return None
