"""kbqa: local knowledge-base question answering."""

import os

# ONNX Runtime (1.2x) keeps a telemetry database under ~/.cache/Microsoft unless this is set before it is imported;
# nothing of ours belongs outside the data folder.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
