"""Great Expectations 1.x expectation suites, one JSON file per data contract.

The JSON files are GX's own serialization (``ExpectationSuite.to_json_dict()``) and are loaded
with ``curation.validate.gx_validate.load_suite``. They are generated from the Python definitions in
``curation.validate.gx_validate.build_suites``; regenerate with ``python -m curation.validate.gx_validate write-suites``.
"""

from __future__ import annotations

from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent
