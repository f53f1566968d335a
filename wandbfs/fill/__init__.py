"""How an object's bytes reach a reader: the fill engine, the uncached stream, reference
sources, the fetcher that picks between them, the object reader an open gets."""
