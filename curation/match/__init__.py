"""Match: the pairs that repeat another pair or an evaluation prompt, found on the normalized
text. Distinct texts hashed and tokenized once (``text_index``), near-duplicate verdicts
(``near_dup``: MinHash LSH + word alignment; ``informative``: generic turns), exact and near
duplicate removal (``dedup``), train-vs-test decontamination (``decontam``, with the extra and
quarantined reference prompts of ``references``) and the paraphrase report (``paraphrase``)."""
