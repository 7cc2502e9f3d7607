import importlib

import pytest


@pytest.mark.parametrize("name", ["bus", "contentlib", "actors"])
def test_package_imports_with_all(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(module.__all__, list)
