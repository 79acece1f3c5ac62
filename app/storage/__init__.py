"""Storage: the Milvus collections, the catalog's tables (knowledge bases, documents, conversations), the disk."""
