"""kbqa: local knowledge-base question answering."""

import os
import sys

# ONNX Runtime (1.2x) keeps a telemetry database under ~/.cache/Microsoft unless this is set before it is imported;
# nothing of ours belongs outside the data folder.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# OpenVINO sends a usage event to Google Analytics on import (and its converter and nncf on each use), and writes a
# client id under ~/intel, unless the user opted out. Each falls back to a silent stub when openvino_telemetry cannot
# be imported: a None entry in sys.modules makes every import of it fail.
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
