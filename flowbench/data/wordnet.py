"""Real English offline: the definition glosses of WordNet 3.0, from Debian's `wordnet-base`.

Each synset line of `data.noun`, `data.verb`, `data.adj` and `data.adv` (the lines that do not
start with two spaces: those are the license header) ends in `| <gloss>`: a definition and
often quoted examples, e.g. "an entity that has physical existence". Every gloss is one
document, packed and split as text_files does (flowbench/data/text.py). `max_documents` keeps
the first glosses in file order (noun, verb, adj, adv), so a smoke suite stays small.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from flowbench.data.corpus import CorpusError
from flowbench.data.text import TextFiles
from flowbench.registry import CORPORA

WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
DEBIAN_ROOT = "/usr/share/wordnet"  # where `apt-get install wordnet-base` puts them


def glosses(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  ") or "| " not in line:
                continue
            gloss = line.split("| ", 1)[1].strip()
            if gloss:
                yield gloss


@CORPORA.register("wordnet_glosses")
class WordNetGlosses(TextFiles):
    def __init__(self, *, seq_len: int, cache_dir, root: str = DEBIAN_ROOT, vocab_size: int = 1024,
                 max_documents: int | None = None, valid_fraction: float = 0.05,
                 test_fraction: float = 0.05, seed: int = 0):
        paths = [Path(root) / f for f in WORDNET_FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise CorpusError(f"wordnet_glosses: {missing[0]} not found (apt-get install wordnet-base, "
                              f"or set corpus.root)")
        if max_documents is not None and int(max_documents) < 1:
            raise CorpusError(f"wordnet_glosses: max_documents must be >= 1, got {max_documents!r}")
        self.max_documents = None if max_documents is None else int(max_documents)
        super().__init__(paths=[str(p) for p in paths], seq_len=seq_len, vocab_size=vocab_size,
                         one_doc_per="line", cache_dir=cache_dir, valid_fraction=valid_fraction,
                         test_fraction=test_fraction, seed=seed)
        self._fields["max_documents"] = self.max_documents

    def _key_extra(self) -> tuple:
        return ("glosses", self.max_documents)

    def _iter_all(self) -> Iterator[str]:
        count = 0
        for f in self.files:
            for gloss in glosses(f):
                if self.max_documents is not None and count >= self.max_documents:
                    return
                count += 1
                yield gloss
