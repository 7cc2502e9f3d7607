"""The interim ``cmdist demo`` runs a real bus workload and checks what came out."""

from __future__ import annotations

import json

import pytest

from actors.cli import main


def test_demo_pushes_every_message_through_the_pipeline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--chunks", "3000", "--round-trips", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["messages"] == 6000
    assert result["checksum_ok"] is True
    assert result["dead_letters"] == 0
    assert result["actors"]["demo/Hasher"]["handled"] == 3000
    assert result["actors"]["demo/Hasher"]["workers"] == 3
    assert result["actors"]["demo/Collector"]["handled"] == 3050
    assert result["loop"] in ("uvloop", "asyncio")


def test_demo_refuses_bad_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--chunks", "0"])
    assert "--chunks" in capsys.readouterr().err
