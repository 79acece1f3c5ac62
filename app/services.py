"""Builds every service once from the settings; the API, the CLI and the tests all start here."""

from __future__ import annotations

import logging
import threading
from functools import cached_property

from app.chat.conversations import ConversationStore
from app.chat.service import ChatService
from app.eval.jobs import EvalJobs
from app.eval.service import EvaluationService
from app.kb.ingestion import DocumentIndexer, IngestionQueue
from app.kb.loaders import LoadLimits
from app.kb.preview.service import PreviewService
from app.kb.priority import lower_current_thread, run_lowered
from app.kb.service import KnowledgeBaseService
from app.llm.client import LLMClient
from app.retrieval.embeddings import Embedder
from app.retrieval.retriever import HybridFusion, Retriever
from app.retrieval.scoring import ScoreCalibration
from app.retrieval.service import SearchService
from app.retrieval.text_embeddings import EmbeddingService
from app.settings import Settings
from app.storage.catalog import Catalog
from app.storage.diskspace import DiskSpace
from app.storage.vector_store import MilvusStore

log = logging.getLogger(__name__)

_EMBEDDERS: dict[tuple[object, ...], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


class _LazyEmbedder:
    """Loads the model on first use, once per process and role. Queries and ingestion get separate instances,
    so a search never waits for a batch of passages to finish."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self._embedder: Embedder | None = None

    def __call__(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._load()
        return self._embedder

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    def _load(self) -> Embedder:
        s = self.settings
        # Threads start with the niceness of the one that creates them. Where the query and passage models share
        # one pool (OpenVINO), both load lowered; queries then run on the caller's own thread (Embedder).
        lowered = self.role == "passage" or Embedder.shares_process_thread_pool(s.embedding.backend)
        niceness = s.ingest.niceness if lowered else 0
        key = (
            self.role,
            s.resolved_embedding_model,
            s.embedding.backend,
            s.embedding.batch_size,
            s.embedding.threads,
            s.embedding.query_prompt,
            s.embedding.passage_prompt,
            niceness,
        )
        with _EMBEDDERS_LOCK:
            if key not in _EMBEDDERS:
                _EMBEDDERS[key] = run_lowered(niceness, lambda: Embedder(
                    s.resolved_embedding_model,
                    backend=s.embedding.backend,
                    batch_size=s.embedding.batch_size,
                    threads=s.embedding.threads,
                    query_prompt=s.embedding.query_prompt,
                    passage_prompt=s.embedding.passage_prompt,
                    for_queries=self.role == "query",
                ))
            return _EMBEDDERS[key]


class Services:
    def __init__(self, settings: Settings, indexer_type: type[DocumentIndexer] = DocumentIndexer) -> None:
        """`indexer_type`: a subclass of DocumentIndexer (tests hold windows of indexing open with one)."""
        self.settings = settings
        settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(settings.storage.resolved_catalog_url)
        self.disk = DiskSpace(settings.storage.data_dir, settings.storage.min_free_disk_mb)
        self.store = MilvusStore(
            settings.storage.resolved_milvus_uri,
            settings.storage.milvus_token,
            settings.storage.milvus_timeout_s,
            disk=self.disk,
        )
        self.query_embedder = _LazyEmbedder(settings, "query")
        self.passage_embedder = _LazyEmbedder(settings, "passage")
        self.indexer = indexer_type(
            self.catalog,
            self.store,
            self.passage_embedder,
            settings.storage.files_dir,
            lease_s=settings.ingest.lease_s,
            limits=LoadLimits.from_settings(settings),
            max_attempts=settings.ingest.max_index_attempts,
            progress_interval_s=settings.ocr.progress_interval_s,
        )
        self.queue = IngestionQueue(self.indexer, niceness=settings.ingest.niceness)

    def warm_passage_embedder(self) -> threading.Thread:
        """Load the passage model in the background, lowered like indexing, so that the first upload does not wait
        for it: loading it took ~4 s of CPU inside the first upload before. A model that cannot load is reported
        here and again, as that document's error, by the first upload."""

        def warm() -> None:
            lower_current_thread(self.settings.ingest.niceness)
            try:
                self.passage_embedder().encode_passages(["预热 warm-up"])
            except Exception:
                log.exception("the passage embedding model could not be loaded")

        thread = threading.Thread(target=warm, name="kbqa-warm-passages", daemon=True)
        thread.start()
        return thread

    @cached_property
    def knowledge_bases(self) -> KnowledgeBaseService:
        return KnowledgeBaseService(
            self.settings, self.catalog, self.store, self.queue, embedding_dim=self.query_embedder().dim
        )

    @cached_property
    def previews(self) -> PreviewService:
        return PreviewService(self.settings, self.knowledge_bases, self.store)

    @cached_property
    def search(self) -> SearchService:
        s = self.settings
        retriever = Retriever(
            self.store,
            lambda text: self.query_embedder().encode_query(text),
            ScoreCalibration.load(s.retrieval.score_calibration_file),
            HybridFusion(s.retrieval.hybrid_fusion, s.retrieval.hybrid_dense_weight, s.retrieval.rrf_k),
        )
        return SearchService(s, self.knowledge_bases, retriever)

    @cached_property
    def embeddings(self) -> EmbeddingService:
        # The passage embedder: a large embedding request then holds up indexing, never a user's search.
        return EmbeddingService(self.settings, self.passage_embedder)

    @cached_property
    def llm(self) -> LLMClient:
        return LLMClient(self.settings)

    @cached_property
    def conversations(self) -> ConversationStore:
        return ConversationStore(self.catalog)

    @cached_property
    def chat(self) -> ChatService:
        return ChatService(self.settings, self.knowledge_bases, self.search, self.llm, self.conversations)

    @cached_property
    def evaluation(self) -> EvaluationService:
        def chat_factory() -> ChatService:  # an LLM client per evaluation thread (async clients bind to a loop)
            return ChatService(
                self.settings, self.knowledge_bases, self.search, LLMClient(self.settings), self.conversations
            )

        jobs = EvalJobs(self.settings.eval.jobs_kept)
        return EvaluationService(self.settings, self.knowledge_bases, self.search, chat_factory, jobs)

    def close(self) -> None:
        if "evaluation" in self.__dict__:
            self.evaluation.jobs.shutdown()
        self.queue.stop()
        self.store.close()
        self.catalog.dispose()
