"""hierarchy.toml: the default file loads; every bad file is refused with file, key and problem;
a data root is never assumed (no writes to the current folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import Hierarchy
from actors.config import (
    IN_CODE,
    HierarchyConfig,
    check_hierarchy,
    default_hierarchy,
    load_hierarchy,
    nal_path,
)
from actors.errors import HierarchyConfigError

ROOT = Path(__file__).resolve().parents[2]

BASE = """
[[site]]
code = "CS1"
type = "cas"
server = "CS1SITE.CONTOSO.COM"

[[site]]
code = "PS1"
type = "primary"
parent = "CS1"
server = "PS1SITE.CONTOSO.COM"

[[site]]
code = "SS1"
type = "secondary"
parent = "PS1"
server = "SS1SITE.CONTOSO.COM"

[[dp]]
name = "PS1DP1.CONTOSO.COM"
site = "PS1"

[[dp]]
name = "PS1PDP.CONTOSO.COM"
site = "PS1"
pull = true
sources = ["PS1DP1.CONTOSO.COM"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hierarchy.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_default_file_describes_the_reference_hierarchy() -> None:
    h = default_hierarchy()
    assert {s.code: (s.type, s.parent) for s in h.sites} == {
        "CS1": ("cas", None),
        "PS1": ("primary", "CS1"),
        "PS2": ("primary", "CS1"),
        "P01": ("primary", "CS1"),
        "SS1": ("secondary", "PS1"),
    }
    names = {d.name for d in h.dps_of("PS1")}
    assert {"PS1DP1.CONTOSO.COM", "PS1DP2.CONTOSO.COM", "PS1SYS.CONTOSO.COM"} <= names
    assert "PS1SITE.CONTOSO.COM" in names  # the site server is a DP too
    pdp = h.dp("P01PDP1.CONTOSO.COM")
    assert pdp.pull
    assert pdp.sources
    assert all(h.dp(s).site == "P01" for s in pdp.sources)
    s = h.settings
    assert (s.package_processing_threads, s.threads_per_package) == (3, 5)
    assert (s.sending_threads_per_site, s.despooling_threads) == (3, 3)
    assert s.despooler_retry_delay == 300.0
    assert (s.pulldp_max_active_jobs, s.pulldp_notification_attempts) == (50, 30)
    assert (s.pkgxfer_max_packages, s.pkgxfer_threads_per_package) == (3, 5)
    assert h.tree_path("SS1", "P01") == ("SS1", "PS1", "CS1", "P01")
    assert h.link("PS1", "CS1") is not None


def test_nal_path_has_the_reference_form() -> None:
    assert (
        nal_path("PS1DP1.CONTOSO.COM", "PS1")
        == '["Display=\\\\PS1DP1.CONTOSO.COM\\"]MSWNET:["SMS_SITE=PS1"]\\\\PS1DP1.CONTOSO.COM\\'
    )


def test_the_default_is_the_repository_file_and_sets_no_data_root(tmp_path: Path) -> None:
    h = default_hierarchy()
    assert h.settings.data_root is None
    assert msgspec.structs.replace(h, file="") == msgspec.structs.replace(
        load_hierarchy(ROOT / "hierarchy.toml"), file=""
    )
    assert load_hierarchy(None, root=tmp_path) == default_hierarchy(root=tmp_path)
    assert default_hierarchy(root=tmp_path).require_data_root() == tmp_path.resolve()


def test_without_a_data_root_nothing_has_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    h = default_hierarchy()
    for where in (h.require_data_root, lambda: h.data_root, lambda: h.server_root("X")):
        with pytest.raises(HierarchyConfigError, match="no data root: pass root=") as info:
            where()
        assert (info.value.file, info.value.key) == (h.file, "settings.data_root")
    in_code = msgspec.structs.replace(h, file="")
    with pytest.raises(HierarchyConfigError) as info:
        in_code.require_data_root()
    assert info.value.file == IN_CODE
    assert list(tmp_path.iterdir()) == []


async def test_opening_a_config_without_a_data_root_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HierarchyConfigError, match="no data root"):
        async with Hierarchy.open(default_hierarchy()):
            pass
    assert _names_under(tmp_path) == []


def test_a_relative_data_root_is_relative_to_the_file_and_root_to_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    file = _write(folder, BASE + '\n[settings]\ndata_root = "data"\n')
    monkeypatch.chdir(tmp_path)
    assert load_hierarchy(file).data_root == folder / "data"
    assert load_hierarchy(file, root="elsewhere").data_root == tmp_path / "elsewhere"
    assert load_hierarchy(file, root=tmp_path / "abs").data_root == tmp_path / "abs"
    assert load_hierarchy(_write(folder, BASE)).settings.data_root is None


BAD = [
    ("unknown key", BASE + '\n[settings]\ncolour = "red"\n', "settings.colour", "unknown field"),
    (
        "unknown key in a site",
        BASE.replace('code = "PS1"', 'code = "PS1"\nflavour = 1', 1),
        "site[1].flavour",
        "unknown field",
    ),
    ("missing key", BASE + '\n[[dp]]\nsite = "PS1"\n', "dp[2].name", "missing required field"),
    (
        "missing parent",
        BASE.replace('parent = "CS1"', 'parent = "XX9"'),
        "site[1].parent",
        "'XX9' of site 'PS1' is not a site code",
    ),
    (
        "cycle",
        BASE.replace('type = "cas"', 'type = "primary"\nparent = "PS1"'),
        "site[0].parent",
        "parent cycle",
    ),
    (
        "duplicate site code",
        BASE + '\n[[site]]\ncode = "PS1"\ntype = "primary"\nparent = "CS1"\nserver = "X.C"\n',
        "site[3].code",
        "duplicate site code 'PS1'",
    ),
    (
        "duplicate DP name",
        BASE + '\n[[dp]]\nname = "ps1dp1.contoso.com"\nsite = "PS1"\n',
        "dp[2].name",
        "duplicate DP name",
    ),
    (
        "pull DP is its own source",
        BASE.replace('sources = ["PS1DP1.CONTOSO.COM"]', 'sources = ["PS1PDP.CONTOSO.COM"]'),
        "dp[1].sources[0]",
        "cannot be its own source",
    ),
    (
        "pull DP with unknown source",
        BASE.replace('sources = ["PS1DP1.CONTOSO.COM"]', 'sources = ["NOPE.CONTOSO.COM"]'),
        "dp[1].sources[0]",
        "'NOPE.CONTOSO.COM' of pull DP 'PS1PDP.CONTOSO.COM' is not a DP",
    ),
    (
        "secondary with children",
        BASE + '\n[[site]]\ncode = "SS2"\ntype = "secondary"\nparent = "SS1"\nserver = "S.C"\n',
        "site[3].parent",
        "a secondary site cannot have child sites",
    ),
    (
        "negative capacity (setting)",
        BASE + "\n[settings]\nsending_threads_per_site = -1\n",
        "settings.sending_threads_per_site",
        ">= 1",
    ),
    (
        "negative capacity (pull DP)",
        BASE.replace("pull = true", "pull = true\nmax_active_jobs = -5"),
        "dp[1].max_active_jobs",
        ">= 0",
    ),
    ("not TOML", BASE + "\n[[site]\n", "", "not valid TOML"),
    (
        "DP on an unknown site",
        BASE + '\n[[dp]]\nname = "Z.C"\nsite = "ZZZ"\n',
        "dp[2].site",
        "'ZZZ' of DP 'Z.C' is not a site code",
    ),
    (
        "link to nowhere",
        BASE + '\n[[link]]\nfrom = "CS1"\nto = "PS9"\nbandwidth = 1000\n',
        "link[0].to",
        "neither a site code nor a DP name",
    ),
    (
        "wrong type",
        BASE + '\n[settings]\ntime_scale = "fast"\n',
        "settings.time_scale",
        "Expected `float`",
    ),
    ("no sites", "[settings]\ntime_scale = 1.0\n", "site", "no sites"),
    ("empty file", "", "site", "no sites"),
    (
        "DP name that climbs out of the data root",
        BASE.replace('name = "PS1DP1.CONTOSO.COM"', 'name = "../../etc"'),
        "dp[0].name",
        "DP name '../../etc' is not a host name",
    ),
    (
        "DP name that is an absolute path",
        BASE.replace('name = "PS1DP1.CONTOSO.COM"', 'name = "/abs"'),
        "dp[0].name",
        "is not a host name",
    ),
    (
        "DP name with a backslash",
        BASE.replace('name = "PS1DP1.CONTOSO.COM"', 'name = "A\\\\B"'),
        "dp[0].name",
        "is not a host name",
    ),
    (
        "DP name starting with a dot",
        BASE.replace('name = "PS1DP1.CONTOSO.COM"', 'name = ".hidden"'),
        "dp[0].name",
        "is not a host name",
    ),
    (
        "DP name too long",
        BASE.replace('name = "PS1DP1.CONTOSO.COM"', f'name = "{"a." * 127}a"'),
        "dp[0].name",
        "at most 253",
    ),
    (
        "site server that climbs out of the data root",
        BASE.replace('server = "PS1SITE.CONTOSO.COM"', 'server = "../x"'),
        "site[1].server",
        "server name '../x' is not a host name",
    ),
    (
        "site server with a leading dash",
        BASE.replace('server = "PS1SITE.CONTOSO.COM"', 'server = "-x.c"'),
        "site[1].server",
        "is not a host name",
    ),
    ("time scale inf", BASE + "\n[settings]\ntime_scale = inf\n", "settings.time_scale", "finite"),
    ("time scale nan", BASE + "\n[settings]\ntime_scale = nan\n", "settings.time_scale", "> 0"),
    ("time scale 0", BASE + "\n[settings]\ntime_scale = 0.0\n", "settings.time_scale", "> 0"),
    (
        "retry delay inf",
        BASE + "\n[settings]\ndistribution_retry_delay = inf\n",
        "settings.distribution_retry_delay",
        "not a finite number",
    ),
    (
        "poll interval inf",
        BASE + "\n[settings]\nsmsdbmon_poll_interval = inf\n",
        "settings.smsdbmon_poll_interval",
        "not a finite number",
    ),
    (
        "link latency inf",
        BASE + '\n[[link]]\nfrom = "CS1"\nto = "PS1"\nbandwidth = 1000\nlatency = inf\n',
        "link[0].latency",
        "not a finite number",
    ),
    (
        "a million package processing threads",
        BASE + "\n[settings]\npackage_processing_threads = 1000000\n",
        "settings.package_processing_threads",
        "<= 1000",
    ),
    (
        "too many despooling threads",
        BASE + "\n[settings]\ndespooling_threads = 1001\n",
        "settings.despooling_threads",
        "<= 1000",
    ),
    (
        "too many PkgXferMgr workers",
        BASE + "\n[settings]\npkgxfer_max_packages = 1000\npkgxfer_threads_per_package = 1000\n",
        "settings.pkgxfer_threads_per_package",
        "at most 10,000",
    ),
    (
        "pull DP capacity",
        BASE.replace("pull = true", "pull = true\nmax_active_jobs = 100000000"),
        "dp[1].max_active_jobs",
        "<= 100000",
    ),
]


@pytest.mark.parametrize(("case", "text", "key", "problem"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_is_refused_naming_file_key_and_problem(
    tmp_path: Path, case: str, text: str, key: str, problem: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(HierarchyConfigError) as info:
        load_hierarchy(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key, case
    assert problem in err.problem, case
    assert str(path) in str(err)
    assert problem in str(err)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HierarchyConfigError, match="cannot read the file"):
        load_hierarchy(tmp_path / "absent.toml")


async def test_opening_a_file_with_an_escaping_name_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    text = BASE.replace('name = "PS1DP1.CONTOSO.COM"', 'name = "../../escaped"')
    with pytest.raises(HierarchyConfigError, match="not a host name"):
        async with Hierarchy.open(_write(folder, text), root=folder / "data"):
            pass
    assert _names_under(tmp_path) == ["a", "b", "hierarchy.toml"]


def _names_under(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*"))


def test_check_hierarchy_takes_a_good_config_as_is() -> None:
    h = load_hierarchy(ROOT / "hierarchy.toml")
    assert check_hierarchy(h) is h


def _settings(h: HierarchyConfig, **changes: object) -> HierarchyConfig:
    return msgspec.structs.replace(h, settings=msgspec.structs.replace(h.settings, **changes))


def _dp_named(h: HierarchyConfig, name: str) -> HierarchyConfig:
    return msgspec.structs.replace(
        h, dps=(msgspec.structs.replace(h.dps[0], name=name), *h.dps[1:])
    )


IN_CODE_BAD = [
    ("no sites", lambda h: msgspec.structs.replace(h, sites=()), "site", "no sites"),
    (
        "inf time scale",
        lambda h: _settings(h, time_scale=float("inf")),
        "settings.time_scale",
        "finite",
    ),
    (
        "threads",
        lambda h: _settings(h, package_processing_threads=1_000_000),
        "settings.package_processing_threads",
        "<= 1000",
    ),
    ("escaping DP", lambda h: _dp_named(h, "../../etc"), "dp[0].name", "not a host name"),
]


@pytest.mark.parametrize(
    ("case", "change", "key", "problem"), IN_CODE_BAD, ids=[b[0] for b in IN_CODE_BAD]
)
def test_check_hierarchy_refuses_a_bad_config_built_in_code(
    case: str, change: Any, key: str, problem: str
) -> None:
    h = change(msgspec.structs.replace(load_hierarchy(ROOT / "hierarchy.toml"), file=""))
    with pytest.raises(HierarchyConfigError) as info:
        check_hierarchy(h)
    assert (info.value.file, info.value.key) == (IN_CODE, key), case
    assert problem in info.value.problem, case


def test_check_hierarchy_names_the_file_a_config_came_from() -> None:
    h = load_hierarchy(ROOT / "hierarchy.toml")
    with pytest.raises(HierarchyConfigError) as info:
        check_hierarchy(_settings(h, despooler_retry_delay=float("inf")))
    assert info.value.file == str(ROOT / "hierarchy.toml")
