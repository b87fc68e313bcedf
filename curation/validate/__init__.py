"""Validate: the Great Expectations suites (built in Python from each dataset's declarations,
stored in ``expectations/``; ``python -m curation.validate.gx_validate write-suites``) and
running them on a table (``contract``: every row in Arrow, the full suite in GX on a sample)."""
