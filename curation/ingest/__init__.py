"""Ingest: which upstream files exist and how their bytes are read (``sources``, within the read
policy), their fingerprints and presence (``upstream``), the mirror checks before a run
(``preflight``), and one upstream file turned into one table with every row's verdict
(``ingest``)."""
