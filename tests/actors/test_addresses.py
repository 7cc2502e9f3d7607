"""Package IDs: made and read back in one place (the provider makes them, DRS and the facade
read a package's source site from them)."""

from __future__ import annotations

from actors import addresses


def test_a_package_id_is_its_site_code_and_five_hex_digits() -> None:
    assert addresses.package_id("CS1", 6) == "CS100006"
    assert addresses.package_id("P01", 0xFFFFF) == "P01FFFFF"


def test_the_source_site_is_read_back_from_the_id() -> None:
    for site in ("CS1", "PS1", "P01"):
        assert addresses.package_site(addresses.package_id(site, 0x1A)) == site
    assert addresses.package_site("X") == ""  # too short to name a site: no site
