"""Turning on a model's own gradient checkpointing (transformers' or timm's switch), non-reentrant so that the
recomputed forward runs the plans the layers hold."""

from __future__ import annotations

from torch import nn


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Call the model's gradient checkpointing switch; raise a ValueError naming the model's class if it has none."""
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
