"""Files: adapter folders (safetensors + JSON)."""
