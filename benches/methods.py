"""The training-step methods every speed benchmark compares, prepared on any model and target pattern."""

from __future__ import annotations

from typing import Callable, Optional

import torch

import glora
from glora.layers.choices import GENES
from glora.tuner.wrapping import glora_layers
from reference_layer import replace_linears

METHODS = [
    "full_finetune",
    "peft_lora_r8",
    "peft_glora_default",
    "reference_supernet",
    "glora_supernet",
    "glora_supernet_add_bias",
    "glora_fixed_random",
    "glora_fixed_all_lora",
]
"""``glora_supernet_add_bias``: the paper's terms on bias-free layers too (``add_bias=True``; C and E create a bias
there), a different model from the default only where layers lack a bias (the LLaMA-style decoder)."""


OPTIMIZER = (
    "AdamW lr 1e-4, weight decay 1e-4; fused on CUDA, as the transformers Trainer's default optimizer "
    "(adamw_torch_fused) with torch >= 2.8, and glora's SupernetTrainer"
)


def training_step(
    model: torch.nn.Module,
    params: list,
    loss_of: Callable[[torch.nn.Module], torch.Tensor],
    device_type: str,
    fused: Optional[bool] = None,
) -> Callable[[], None]:
    """One AdamW step (lr 1e-4, weight decay 1e-4) under bf16 autocast, as every speed benchmark times it: see
    ``OPTIMIZER`` (``fused`` None: fused on CUDA only)."""
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4, fused=device_type == "cuda" if fused is None else fused)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16):
            loss = loss_of(model)
        loss.backward()
        opt.step()

    return step


def prepare(
    method: str,
    make_model: Callable[[], torch.nn.Module],
    targets: str,
    head: Optional[str],
    seed: int = 0,
    batched_weights: str = "auto",
):
    """(model, trainable params, fixed subnet or None) for one method; ``head`` stays trainable everywhere;
    glora's models use ``GLoRAConfig.batched_weights=batched_weights``."""
    model = make_model()
    saved = [head] if head else None
    subnet = None
    if method == "full_finetune":
        for p in model.parameters():
            p.requires_grad_(True)
    elif method in ("peft_lora_r8", "peft_glora_default"):
        from peft import GloraConfig, LoraConfig, get_peft_model

        cfg = (
            LoraConfig(r=8, target_modules=targets, modules_to_save=saved)
            if method == "peft_lora_r8"
            else GloraConfig(target_modules=targets, modules_to_save=saved)
        )
        model = get_peft_model(model, cfg)
    elif method == "reference_supernet":
        replace_linears(model, targets, rank=4)
        if head:
            for p in model.get_submodule(head).parameters():
                p.requires_grad_(True)
    else:
        add_bias = method == "glora_supernet_add_bias"
        glora.wrap(
            model,
            glora.GLoRAConfig(
                rank=4,
                target_modules=targets,
                modules_to_save=saved,
                add_bias=add_bias,
                batched_weights=batched_weights,
            ),
        )
        if method in ("glora_supernet", "glora_supernet_add_bias"):
            glora.supernet_mode(model, seed)
        elif method == "glora_fixed_all_lora":
            subnet = {n: {g: layer.choices[g][0] for g in GENES} for n, layer in glora_layers(model)}
        else:
            subnet = glora.sample_subnet(model, seed)
        if subnet is not None:
            glora.set_subnet(model, subnet)
    model.train()
    return model, [p for p in model.parameters() if p.requires_grad], subnet
