"""The shared core every stage and every dataset builds on: table schemas and their column
descriptions, the text normalization and hashing used for matching, the JSON Lines parser, the rule
and suite machinery, the object store, the stage-table handle, thread pool, bounds, redaction and
the code version. It imports nothing from the stages above it (``tests/test_layout.py``)."""
