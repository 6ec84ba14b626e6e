"""Files: adapter folders (safetensors + JSON), training checkpoints (safetensors with a JSON document), and the
atomic writes and pickle-free reading they share."""
