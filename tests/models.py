"""Small models of every supported layer type, shared by the tests (as PEFT's testing_common does)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 24, bias=bias)
        self.fc2 = nn.Linear(24, 16, bias=bias)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


class ConvNet(nn.Module):
    """Conv1d, grouped and dilated Conv2d, Conv3d and a bias-free conv."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.c3 = nn.Conv2d(8, 6, 1, bias=False)
        self.c4 = nn.Conv1d(6, 5, 3, stride=2)
        self.c5 = nn.Conv3d(1, 2, (1, 3, 3), padding=(0, 1, 1))
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x))))))
        h3 = self.c5(h[:, :1].unsqueeze(1)).mean(dim=(1, 2))
        h = h + h3.unsqueeze(1)
        h = self.c4(h.flatten(2))
        return self.head(h.mean(-1))


class TinyTransformer(nn.Module):
    """A pre-norm transformer block with bias-free q/k/v/o (LLaMA-like) and a biased MLP."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = (proj(h).view(b, t, self.heads, -1).transpose(1, 2) for proj in (self.q, self.k, self.v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        x = x + self.down(F.gelu(self.up(self.norm2(x))))
        return self.head(x)


def gpt2_tiny() -> nn.Module:
    from transformers import GPT2Config, GPT2Model

    return GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=50, n_positions=16)).eval()


def bert_tiny() -> nn.Module:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=60)
    return BertModel(cfg, add_pooling_layer=False).eval()


def vit_tiny() -> nn.Module:
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=3
    ).eval()


class Case:
    """A model factory, its targets and an input maker; ``output`` turns the model's output into one tensor."""

    def __init__(
        self,
        name: str,
        make: Callable[[], nn.Module],
        targets,
        make_input: Callable[[torch.Generator], object],
        output=None,
    ):
        self.name = name
        self.make = make
        self.targets = targets
        self.make_input = make_input
        self.output = output or (lambda out: out)

    def __repr__(self) -> str:
        return self.name

    def run(self, model: nn.Module, inputs) -> torch.Tensor:
        return self.output(model(inputs))


def _hidden(out) -> torch.Tensor:
    return out.last_hidden_state


CASES = [
    Case("mlp", MLP, ["fc1", "fc2"], lambda g: torch.randn(4, 12, generator=g)),
    Case("mlp_regex", lambda: MLP(bias=False), r"fc\d", lambda g: torch.randn(4, 12, generator=g)),
    Case("convnet", ConvNet, ["c1", "c2", "c3", "c4", "c5"], lambda g: torch.randn(2, 3, 8, 8, generator=g)),
    Case("transformer", TinyTransformer, "all-linear", lambda g: torch.randn(2, 5, 16, generator=g)),
    Case(
        "gpt2_conv1d",
        gpt2_tiny,
        ["c_attn", "c_proj", "c_fc"],
        lambda g: torch.randint(0, 50, (2, 7), generator=g),
        _hidden,
    ),
    Case(
        "bert",
        bert_tiny,
        ["query", "key", "value", "dense"],
        lambda g: torch.randint(0, 60, (2, 9), generator=g),
        _hidden,
    ),
    Case("vit", vit_tiny, ["qkv", "proj", "fc1", "fc2"], lambda g: torch.randn(2, 3, 32, 32, generator=g)),
]


def perturbed(model: nn.Module, seed: int, scale: float = 0.1) -> nn.Module:
    """``model`` with every adapter tensor drawn at random (seeded), so each configuration computes something else."""
    import glora

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model
