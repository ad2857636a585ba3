"""The benchmark suite times what the registry holds, on the layer suite of fastconv._suite.

Run:  python -m pytest bench --benchmark-enable --benchmark-json bench.json
Then: python bench/make_table.py bench.json   (the Markdown table in README.md)
"""

import pytest

from fastconv import _bench


@pytest.fixture(scope="session")
def torch_peer():
    """PyTorch in its own process, or None (its rows are then skipped)."""
    peer = _bench.start_torch_peer(__import__("fastconv").get_num_threads())
    if isinstance(peer, str):
        yield None
        return
    yield peer
    peer.close()
