"""Compare the releases of two stores file by file (by path inside the release).

Every file must have the same sha256; parquet files must also have the same
``pq.ParquetFile(...).metadata``. Files named after the stores (e.g. ``manifest.json`` and
``README.md``, which carry the release id and code version) are reported but not required to match.

    python -m bench.compare_releases OLD_STORE NEW_STORE [manifest.json README.md]

Exit code 0 when everything required is identical. Each store must hold exactly one release.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pyarrow.parquet as pq


def release_files(store: Path) -> dict[str, Path]:
    """``{path inside the release: file}`` of the one release in ``store``."""
    releases = [p for p in store.glob("releases/*") if p.is_dir()]  # not releases/<id>.sha256
    if len(releases) != 1:
        raise SystemExit(f"{store}: expected one release, found {len(releases)}")
    return {str(p.relative_to(releases[0])): p for p in releases[0].rglob("*") if p.is_file()}


def same_file(a: Path, b: Path) -> tuple[bool, str]:
    """Whether two files are identical (and, for parquet, have equal metadata); a description."""
    data_a, data_b = a.read_bytes(), b.read_bytes()
    same = hashlib.sha256(data_a).digest() == hashlib.sha256(data_b).digest()
    if a.suffix != ".parquet":
        return same, f"bytes={len(data_a)}/{len(data_b)}"
    meta_a, meta_b = pq.ParquetFile(a).metadata, pq.ParquetFile(b).metadata
    meta_same = meta_a.to_dict() == meta_b.to_dict()
    detail = f"rows={meta_a.num_rows} row_groups={meta_a.num_row_groups} meta_same={meta_same}"
    return same and meta_same, detail


def main(argv: list[str]) -> int:
    old, new = release_files(Path(argv[0])), release_files(Path(argv[1]))
    exempt = set(argv[2:])
    ok = set(old) == set(new)
    if not ok:
        print("different file sets:", sorted(set(old) ^ set(new)))
    for name in sorted(set(old) & set(new)):
        same, detail = same_file(old[name], new[name])
        print(f"{'OK  ' if same else 'DIFF'} {name} {detail}")
        ok &= same or name in exempt
    print("ALL IDENTICAL" if ok else "DIFFERENCES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
