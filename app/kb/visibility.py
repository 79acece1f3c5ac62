"""Which chunks a search may return, without reading the ready documents of a knowledge base on every query.

A search must return chunks of ready documents only. Reading the ids of all ready documents per query (what this
replaces) costs O(documents): 100,000 small documents were read on every question. Instead, a search leaves out
the documents that MAY have vectors in Milvus while not ready, and those are few: bounded by the indexers at work
and the deletes pending, not by the size of the knowledge base. They are read per query from the catalog with one
statement over an index (documents: kb_id, status, index_attempts), so the answer is exact across several API
processes sharing the catalog, and handed to Milvus as a `doc_id not in [...]` filter (ids this program made,
checked by the store), so the top-k is exact too: no candidates are lost to a filter applied afterwards. With
nothing in flight there is no filter at all. (A status field in Milvus would need every chunk rewritten when its
document turns ready; a per-process cache of the ready set would need invalidating across processes and is
O(documents) again each time it is rebuilt, which during an upload is every query.)

When may a document that is not ready have vectors in Milvus?
- Its indexing started: `DocumentIndexer._start` marks it processing and counts the attempt in `index_attempts`
  in one UPDATE committed before any insert, and the count goes back to 0 only together with `ready`, or with
  `failed` once its vectors are removed. So "queued or processing, index_attempts not 0" covers every document an
  indexer may have written to (a rebuild re-queues a document that is mid-indexing with its count kept), and
  leaves out the uploads waiting in the queue, which may be thousands. Rows from before the count existed
  (NULL) are counted in.
- Its row is gone (deleted, or retired by a new version in the transaction that marks the new one ready) or it
  failed while its vectors could not be removed: a `VectorDeletion` row is written in the same transaction as the
  row's change, and removed once its vectors are deleted and no live indexer can insert them again; an indexer
  that held the document removes it when it drops the work, and otherwise every process's heartbeat removes
  those older than a lease (a claim can no longer be renewed once its row is gone).
- A rebuild re-queues every document of the knowledge base in one transaction, then drops its collection: with
  no ready document a search returns nothing without asking Milvus, and documents turn ready again only once
  indexed into the new collection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import CompoundSelect, delete, exists, or_, select, union_all
from sqlalchemy.orm import Session

from app.storage.catalog import Document, DocumentStatus, KnowledgeBase, VectorDeletion, utcnow


@dataclass(frozen=True)
class SearchScope:
    """What one search of a knowledge base may see."""

    collection: str
    has_ready: bool  # False: nothing to return (and Milvus fails a BM25 search of an empty collection)
    hidden: frozenset[str]  # documents whose vectors the search must leave out


def search_scope(session: Session, kb: KnowledgeBase) -> SearchScope:
    """Two indexed statements whose cost does not grow with the number of ready documents."""
    has_ready = bool(
        session.scalar(select(exists().where(Document.kb_id == kb.id, Document.status == DocumentStatus.ready)))
    )
    hidden = frozenset(session.scalars(hidden_ids(kb))) if has_ready else frozenset()
    return SearchScope(kb.collection_name, has_ready, hidden)


def hidden_ids(kb: KnowledgeBase) -> CompoundSelect:
    """The statement: documents of `kb` that may have vectors while not ready, and its pending vector deletions."""
    in_flight = select(Document.id).where(
        Document.kb_id == kb.id,
        Document.status.in_([DocumentStatus.queued, DocumentStatus.processing]),
        or_(Document.index_attempts.is_(None), Document.index_attempts != 0),
    )
    deleting = select(VectorDeletion.doc_id).where(VectorDeletion.collection_name == kb.collection_name)
    return union_all(in_flight, deleting)


def claim_is_live(doc: Document, now: datetime) -> bool:
    """Whether an indexer may still be working on the document (and so may still insert its vectors)."""
    return doc.claimed_by is not None and doc.lease_until is not None and doc.lease_until >= now


def hold(session: Session, collection: str, doc_ids: Iterable[str]) -> None:
    """Keep searches away from these documents' vectors until `release`, in the caller's transaction."""
    for doc_id in doc_ids:
        if session.get(VectorDeletion, (collection, doc_id)) is None:
            session.add(VectorDeletion(collection_name=collection, doc_id=doc_id))


def release(session: Session, doc_ids: Iterable[str]) -> None:
    """The vectors of these documents are gone and nothing will insert them again (document ids are unique)."""
    ids = list(doc_ids)
    if ids:
        session.execute(delete(VectorDeletion).where(VectorDeletion.doc_id.in_(ids)))


def stale_holds(session: Session, lease: timedelta) -> list[tuple[str, str]]:
    """Holds older than a lease: any indexer that held their documents has let go by now (or lost its claim)."""
    held = select(VectorDeletion.collection_name, VectorDeletion.doc_id)
    rows = session.execute(held.where(VectorDeletion.created_at < utcnow() - lease))
    return [(collection, doc_id) for collection, doc_id in rows]
