"""The GLoRA layer family and its arithmetic: choices, the W' and b' terms, the training ops."""
