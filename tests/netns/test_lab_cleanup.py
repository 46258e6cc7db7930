"""The lab cleans up after itself: a build that fails part-way leaves no namespace (and so no
interface) behind. Root only; skipped with the reason elsewhere."""

from __future__ import annotations

import os

import pytest

from felix_p4.lab.node import NETNS_DIR
from felix_p4.lab.topology import DEFAULT_PODS, Lab, Pod, unavailable

pytestmark = pytest.mark.netns


def test_a_lab_that_fails_to_build_removes_every_namespace_it_made():
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"the lab cannot run here: {reason}")
    broken = Pod("broken", "default", "10.65.0.300", "fd00:65::9")  # not an address
    lab = Lab(pods=(*DEFAULT_PODS[:1], broken))

    with pytest.raises(OSError, match="illegal IP address"):
        lab.build()

    assert not [n for n in os.listdir(NETNS_DIR) if n.startswith(lab.prefix)]
    assert lab.created == []
