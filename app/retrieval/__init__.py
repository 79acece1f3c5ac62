"""Retrieval: query and passage embeddings, dense / BM25 / hybrid search on one 0-1 score scale, search results."""
