"""Turning on a model's own gradient checkpointing (transformers' or timm's switch), non-reentrant so that the
recomputed forward runs the plans the layers hold."""

from __future__ import annotations

from torch import nn


def enable_gradient_checkpointing(model: nn.Module, compiled: bool = False) -> None:
    """Call the model's gradient checkpointing switch; raise a ValueError naming the model's class if it has none.

    ``compiled`` (the forward runs under ``torch.compile``): what transformers adds for checkpointing that the
    compiler cannot trace is taken away, as non-reentrant checkpointing needs neither: the hook making the input
    embeddings require gradients (for reentrant checkpointing) and the key-value cache, which transformers turns
    off on every training forward, logging that it does (``config.use_cache`` is set to False instead)."""
    if (switch := getattr(model, "activation_checkpointing_enable", None)) is not None:  # transformers >= 5
        switch(activation_checkpointing_kwargs={"use_reentrant": False})
    elif (switch := getattr(model, "gradient_checkpointing_enable", None)) is not None:
        switch(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif (switch := getattr(model, "set_grad_checkpointing", None)) is not None:
        switch(True)
    else:
        raise ValueError(
            f"{type(model).__name__} offers no gradient checkpointing switch (transformers' or timm's); "
            "wrap the model in one that forwards it, or checkpoint inside its forward"
        )
    if compiled:
        for module in model.modules():  # the model, or a transformers model inside a wrapper
            hooked = getattr(module, "_require_grads_hook", None) or getattr(module, "_require_grads_hooks", None)
            if hooked and (undo := getattr(module, "disable_input_require_grads", None)) is not None:
                undo()  # only where the hook was registered: older transformers raise when there is none
            config = getattr(module, "config", None)
            if getattr(config, "use_cache", None) is True:
                config.use_cache = False  # type: ignore[union-attr]
