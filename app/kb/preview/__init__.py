"""Sources seen in the original: a document's uploaded file, a chunk with its neighbours, and PDF pages rendered
with a chunk's lines highlighted (found on the page's text layer, or in Tesseract's word boxes on a scanned page),
cached on disk within a bounded size."""
