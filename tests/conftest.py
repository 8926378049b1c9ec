"""Shared fixtures. ``shared_dir`` finds ``../shared`` (the evaluation data beside a developer's or
CI's checkout). A user's clone has none: tests that need it skip with a reason, except under
``CI=true``, where a missing ``../shared`` is a failure, never a silent skip."""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# memelite/tangermeme compile with numba on first use (~40 s): cache it in the checkout (ignored)
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))


def _find_shared():
    env = os.environ.get("DEEPRESOLVE_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared")
    for c in candidates:
        if (c / "data").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_dir():
    found = _find_shared()
    if found is None:
        given = os.environ.get("DEEPRESOLVE_SHARED")
        msg = (f"DEEPRESOLVE_SHARED={given} has no data/ folder: it must name the folder that "
               "holds data/ (e.g. .../shared, not .../shared/data)" if given else
               "../shared (the evaluation data beside the checkout) is absent; "
               "set DEEPRESOLVE_SHARED to its path to run this test")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " -- and CI=true, so this must not skip")
        pytest.skip(msg)
    return found


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on 2-core machines, often next to other work, and their models are small: one
    torch thread is faster than two there and never oversubscribes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
