"""Milvus access: one collection per knowledge base, dense + BM25 sparse vectors, through MilvusClient.

The URI is either a Milvus Lite file (embedded, the default) or http://host:port for a Milvus server; the code
is the same for both. Filter expressions only ever contain ids this program generated (checked by
`_safe_id`), never user text, so no file or knowledge-base name can change what a filter selects.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict
from pymilvus import DataType, Function, FunctionType, MilvusClient
from pymilvus.exceptions import MilvusException

from app.storage.chunks import ChunkRecord
from app.storage.diskspace import DiskSpace

TEXT_MAX_BYTES = 65535
NAME_MAX_BYTES = 1024
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_OUTPUT_FIELDS = ["id", "doc_id", "text", "file_name", "page", "chunk_index", "heading"]
# Whether OCR read the chunk's text: collections made before chunks carried this flag lack the field.
_OCR_FIELD = "ocr"


class VectorStoreUnavailable(RuntimeError):
    """Milvus cannot be reached or refused an operation."""


class ChunkRow(ChunkRecord):
    """A chunk to insert, with its dense vector (its BM25 vector Milvus makes from the text)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    vector: np.ndarray


class Hit(ChunkRecord):
    """A chunk a search found, with Milvus' own score: the cosine similarity, or the BM25 score."""

    raw_score: float


def is_lite_uri(uri: str) -> bool:
    """A Milvus Lite file rather than a server's address."""
    return not uri.startswith(("http://", "https://", "tcp://", "unix:"))


def _safe_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"not an internal id: {value!r}")
    return value


def _id_list(doc_ids: Iterable[str]) -> str:
    """'"a", "b"' for a filter's list, each checked to be an internal id."""
    return ", ".join(f'"{_safe_id(d)}"' for d in doc_ids)


def _clip_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def _record_fields(entity: dict[str, Any]) -> dict[str, Any]:
    """A stored entity as the record's fields: the collection keeps no page as -1 and no heading as ""."""
    page = int(entity.get("page", -1))
    return {**entity, "page": page if page >= 0 else None, "heading": entity.get("heading") or None}


def _hit_from_entity(entity: dict[str, Any], raw_score: float) -> Hit:
    return Hit.model_validate({**_record_fields(entity), "raw_score": raw_score})


class MilvusStore:
    """Thin, typed wrapper over MilvusClient for the knowledge-base collections."""

    def __init__(self, uri: str, token: str = "", timeout: float = 10.0, disk: DiskSpace | None = None) -> None:
        """`disk`: the free space writes to a Milvus Lite file are checked against (see app/storage/diskspace.py)."""
        self.uri = uri
        self.timeout = timeout
        self.is_lite = is_lite_uri(uri)
        self._lite_disk = disk if self.is_lite else None
        if self.is_lite:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            # A connection of its own: pymilvus shares one per URI and token within a process, so closing one
            # store (an API app shutting down, a second Services) would cut every other store off.
            alias = f"kbqa-{uuid.uuid4().hex}"
            self.client = MilvusClient(uri=uri, token=token, timeout=timeout, alias=alias)
        except MilvusException as exc:
            raise VectorStoreUnavailable(f"cannot connect to Milvus at {uri}: {exc}") from exc
        self._ocr_fields: dict[str, bool] = {}  # per collection, looked up once

    def close(self) -> None:
        self.client.close()

    def has_collection(self, name: str) -> bool:
        return self.client.has_collection(name, timeout=self.timeout)

    def create_collection(self, name: str, dim: int) -> None:
        if self.has_collection(name):
            return
        self.check_disk()
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=80)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=32)
        schema.add_field(
            "text",
            DataType.VARCHAR,
            max_length=TEXT_MAX_BYTES,
            enable_analyzer=True,
            analyzer_params={"type": "chinese"},
        )
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("file_name", DataType.VARCHAR, max_length=NAME_MAX_BYTES)
        schema.add_field("page", DataType.INT64)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("heading", DataType.VARCHAR, max_length=NAME_MAX_BYTES)
        schema.add_field(_OCR_FIELD, DataType.BOOL)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        index_params = self.client.prepare_index_params()
        index_params.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
        index_params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self.client.create_collection(
            name, schema=schema, index_params=index_params, consistency_level="Strong", timeout=self.timeout
        )
        self._ocr_fields[name] = True

    def has_ocr_field(self, name: str) -> bool:
        """Whether the collection keeps the OCR flag of its chunks (one made before the flag existed does not: its
        chunks read as not OCR'd). Looked up once per collection; a rebuild drops and makes it anew, with it."""
        known = self._ocr_fields.get(name)
        if known is None:
            described = self.client.describe_collection(name, timeout=self.timeout)
            known = self._ocr_fields[name] = any(f["name"] == _OCR_FIELD for f in described["fields"])
        return known

    def _output_fields(self, name: str) -> list[str]:
        return [*_OUTPUT_FIELDS, _OCR_FIELD] if self.has_ocr_field(name) else _OUTPUT_FIELDS

    def check_disk(self) -> None:
        """DiskFull if a write now might be lost: Milvus Lite on a disk with too little room."""
        if self._lite_disk is not None:
            self._lite_disk.check()

    def drop_collection(self, name: str) -> None:
        self._ocr_fields.pop(name, None)
        if self.has_collection(name):
            self.client.drop_collection(name, timeout=self.timeout)

    def insert(self, name: str, rows: Sequence[ChunkRow]) -> int:
        if not rows:
            return 0
        self.check_disk()
        ocr = self.has_ocr_field(name)
        data = [
            {
                "id": row.chunk_id,
                "doc_id": _safe_id(row.doc_id),
                "text": _clip_utf8(row.text, TEXT_MAX_BYTES),
                # A float32 array, not a list: pymilvus serializes it ~3x faster.
                "dense": np.ascontiguousarray(row.vector, dtype=np.float32),
                "file_name": _clip_utf8(row.file_name, NAME_MAX_BYTES),
                "page": row.page if row.page is not None else -1,
                "chunk_index": row.chunk_index,
                "heading": _clip_utf8(row.heading or "", NAME_MAX_BYTES),
                **({_OCR_FIELD: row.ocr} if ocr else {}),
            }
            for row in rows
        ]
        result = self.client.insert(name, data, timeout=self.timeout)
        return int(result["insert_count"])

    def delete_documents(self, name: str, doc_ids: Iterable[str]) -> None:
        ids = [_safe_id(d) for d in doc_ids]
        if not ids or not self.has_collection(name):
            return
        self.client.delete(name, filter=f"doc_id in [{_id_list(ids)}]", timeout=self.timeout)

    def count_document_chunks(self, name: str, doc_id: str) -> int:
        rows = self.client.query(
            name, filter=f'doc_id == "{_safe_id(doc_id)}"', output_fields=["count(*)"], timeout=self.timeout
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def count(self, name: str) -> int:
        rows = self.client.query(name, filter="", output_fields=["count(*)"], timeout=self.timeout)
        return int(rows[0]["count(*)"]) if rows else 0

    def document_chunks(self, name: str, doc_id: str, offset: int = 0, limit: int = 100) -> list[ChunkRecord]:
        """Chunks `offset`..`offset + limit - 1` of a document, in order (selected by chunk_index in the filter)."""
        expr = (
            f'doc_id == "{_safe_id(doc_id)}" and chunk_index >= {int(offset)} and chunk_index < {int(offset + limit)}'
        )
        fields = self._output_fields(name)
        rows = self.client.query(name, filter=expr, output_fields=fields, limit=limit, timeout=self.timeout)
        rows.sort(key=lambda r: int(r["chunk_index"]))
        return [ChunkRecord.model_validate(_record_fields(r)) for r in rows]

    def search_dense(
        self, name: str, vector: np.ndarray, limit: int, excluded_doc_ids: Collection[str] = ()
    ) -> list[Hit]:
        """The nearest chunks, leaving out those of `excluded_doc_ids` inside Milvus (the top `limit` stays exact)."""
        return self._search(name, vector.astype(np.float32).tolist(), "dense", "COSINE", limit, excluded_doc_ids)

    def search_bm25(self, name: str, text: str, limit: int, excluded_doc_ids: Collection[str] = ()) -> list[Hit]:
        return self._search(name, text, "sparse", "BM25", limit, excluded_doc_ids)

    def search_bm25_with_vectors(
        self, name: str, text: str, limit: int, excluded_doc_ids: Collection[str] = ()
    ) -> tuple[list[Hit], dict[str, np.ndarray]]:
        """BM25 hits and their stored dense vectors, read by the same search, to score them on the dense scale too.
        Asking for the vectors afterwards by id scans the collection's ids: 34 ms at 300k chunks, ~95 ms at 1M
        (Milvus Lite 2.5.1); returned with the hits they cost under a millisecond."""
        found = self._found(name, text, "sparse", "BM25", limit, excluded_doc_ids, extra_fields=["dense"])
        hits = [_hit_from_entity(entity, distance) for entity, distance in found]
        vectors = {
            hit.chunk_id: np.asarray(entity["dense"], dtype=np.float32)
            for hit, (entity, _) in zip(hits, found, strict=True)
        }
        return hits, vectors

    def _search(
        self, name: str, query: object, field: str, metric: str, limit: int, excluded_doc_ids: Collection[str]
    ) -> list[Hit]:
        found = self._found(name, query, field, metric, limit, excluded_doc_ids)
        return [_hit_from_entity(entity, distance) for entity, distance in found]

    def _found(
        self,
        name: str,
        query: object,
        field: str,
        metric: str,
        limit: int,
        excluded_doc_ids: Collection[str],
        extra_fields: Sequence[str] = (),
    ) -> list[tuple[dict[str, Any], float]]:
        result = self.client.search(
            name,
            data=[query],
            anns_field=field,
            limit=limit,
            filter=_excluding(excluded_doc_ids),
            output_fields=[*self._output_fields(name), *extra_fields],
            search_params={"metric_type": metric},
            timeout=self.timeout,
        )
        return [(h["entity"], h["distance"]) for h in result[0]]


def _excluding(doc_ids: Collection[str]) -> str:
    """A filter leaving out these documents' chunks (none: no filter, which costs nothing)."""
    if not doc_ids:
        return ""
    return f"doc_id not in [{_id_list(sorted(doc_ids))}]"
