"""File formats and writing, below the layers that use them: training checkpoints (safetensors with a JSON
document), pickle-free tensor reading, atomic writes, and the files' errors. Adapter folders of a wrapped model are
``glora.tuner.adapter``'s."""
