"""Publish: the release (``release``: parquet parts, the manifest and ``latest.json``, by the
publishing protocol; ``layout``: its id and where its objects live), what goes into it (``card``,
``card_changes``, ``charts``, ``trl``: the dataset card and the TRL view; ``accounting``: every
row read accounted for; ``profile``, ``drift``: the release's profile and its comparison with the
previous one), reading, verifying and pruning releases (``reader``, ``integrity``) and the
data-quality alerts (``alerts``)."""
