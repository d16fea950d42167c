from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real data sets beside the checkout (../shared/data); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not found: real-data tests need it beside the checkout")
    return SHARED_DATA


@pytest.fixture
def isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Caches go to a temporary default data dir, never the user's."""
    cache_root = tmp_path / "dlzoo-home"
    monkeypatch.setenv("DLZOO_DATA_DIR", str(cache_root))
    return cache_root


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every URL fetch fail as on a machine without network; records the URLs tried."""
    tried: list[str] = []

    def no_network(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("network is unreachable (test)")

    def no_connect(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_connect)  # belt and braces: no real connection
    return tried
