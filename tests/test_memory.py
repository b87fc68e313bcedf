"""curation.core.memory: freed large blocks go back to the OS once glibc's mmap threshold is pinned.

Each case runs in a fresh interpreter, so glibc's threshold starts at its default there. The
pattern is the one that kept a run's memory resident between steps: one large block freed
(glibc raises its threshold to that size, 16 MiB), then many 8 MiB blocks (above the pinned
4 MiB), all freed but the one on top of the heap, which keeps the heap from shrinking unless the
blocks had their own mappings.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from curation.core.memory import pin_mmap_threshold

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the pinned threshold is a glibc setting",
)

SETUP = {
    "default": "pass",
    "pinned": "assert pin_mmap_threshold()",
    "resource": "CurationSettings().setup_for_execution(dg.build_init_resource_context())",
    "resource_off": (
        "CurationSettings(malloc_mmap_threshold=0)"
        ".setup_for_execution(dg.build_init_resource_context())"
    ),
}

PROGRAM = """
import dagster as dg
from assets.resources import CurationSettings
from curation.core.memory import pin_mmap_threshold
{setup}
big = bytearray(16 << 20)
del big
blocks = [bytearray(8 << 20) for _ in range(30)]
top = blocks[-1]
del blocks
for line in open("/proc/self/status"):
    if line.startswith("RssAnon"):
        print(int(line.split()[1]) // 1024)
"""


def anonymous_mib_after_frees(setup: str) -> int:
    """RssAnon (MiB) of a fresh interpreter after the allocation pattern above."""
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(setup=SETUP[setup])],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1])


def test_freed_blocks_stay_resident_with_glibcs_dynamic_threshold() -> None:
    """The control: without the pin, ~230 MiB of freed blocks stay in the process."""
    assert anonymous_mib_after_frees("default") - anonymous_mib_after_frees("pinned") >= 150


def test_the_curation_settings_resource_pins_the_threshold() -> None:
    """``CurationSettings.setup_for_execution`` (run once per run process) applies the pin;
    ``malloc_mmap_threshold: 0`` leaves glibc as it is."""
    assert anonymous_mib_after_frees("resource_off") - anonymous_mib_after_frees("resource") >= 150


def test_zero_or_negative_leaves_the_allocator_alone() -> None:
    assert pin_mmap_threshold(0) is False
    assert pin_mmap_threshold(-1) is False
