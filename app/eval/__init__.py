"""The retrieval evaluation workbench: question sets, metrics, runs per mode and chunk size, background jobs."""
