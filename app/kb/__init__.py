"""Knowledge bases: their documents, the loaders and splitter that read them, and background indexing."""
