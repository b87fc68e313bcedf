"""Write ``curation/match/data/common_en_words.txt``: English words too frequent to carry content.

``python -m bench.common_words`` (needs the dev extra: ``wordfreq``). The list is every word of
``wordfreq``'s ``en`` "best" word list (Speer 2022, https://github.com/rspeer/wordfreq, version
pinned in ``pyproject.toml``) with a Zipf frequency above ``ZIPF`` (more than 10**(ZIPF-3) =
~32 occurrences per million words), plus the same words with apostrophes deleted, as
:mod:`curation.core.textnorm` does (``don't`` -> ``dont``). :mod:`curation.match.informative` reads it; the
threshold is derived from the labelled real turns in ``bench/labels`` (``docs/dedup.md``).
"""

from __future__ import annotations

import math
from pathlib import Path

ZIPF = 4.5
OUT = Path(__file__).resolve().parents[1] / "curation" / "match" / "data" / "common_en_words.txt"


def main() -> None:
    from wordfreq import get_frequency_dict

    freq = get_frequency_dict("en", wordlist="best")
    words = {w for w, f in freq.items() if math.log10(f) + 9 > ZIPF}
    words |= {w.replace("'", "").replace("\u2019", "") for w in words}
    words = sorted(w for w in words if w and " " not in w)
    header = (
        f"# wordfreq en best, zipf > {ZIPF}, apostrophes deleted too; see bench/common_words.py\n"
    )
    OUT.write_text(header + "\n".join(words) + "\n")
    print(len(words), "words ->", OUT)


if __name__ == "__main__":
    main()
