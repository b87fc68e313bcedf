"""Normalize: the validated rows of every dataset become the one ``PAIRS`` table (each dataset's
``pairs``/``pair_parts``), with their ``pair_id`` and normalized prompt; quarantined rows,
red-team rows and the file reports go to their own tables (``normalize``)."""
