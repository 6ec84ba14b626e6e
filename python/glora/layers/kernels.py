"""Triton kernels for the dense GLoRA weight on CUDA: ``W' = W0 + W0 * (Pd Pu) + Qd Qu`` in one pass forward and
all four factor gradients in one pass backward (instead of about ten weight-sized PyTorch kernels).

A and B of any form are passed as low-rank factors: ``lora_r`` as its slices, ``vector`` as the column times a
row of ones, ``scalar`` as the element broadcast to a column times a row of ones (``weight_from_factors`` reads
the stored factors as they are, with the rank and the broadcast as arguments). Ranks up to 64 are handled
(padded to a power of two, at least 16, for ``tl.dot``). The backward writes one partial sum per tile row or
column and adds them with ``torch.sum``, so gradients are deterministic (no atomics).
"""

from __future__ import annotations

import os
from typing import Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # triton ships with CUDA builds of torch; CPU-only installs use the PyTorch path
    triton = None

MAX_RANK = 64
ENABLED = os.environ.get("GLORA_FUSED_KERNELS") == "1"
BLOCK_M = 64
BLOCK_N = 128


def available(w0: torch.Tensor) -> bool:
    """Opt-in (``GLORA_FUSED_KERNELS=1``), on CUDA, over a float32/bf16/fp16 base, outside torch.compile. On an
    H200 the fused path cut an all-lora LLaMA-style step from 1.86x to 1.55x PEFT LoRA's time, but slowed the
    launch-bound ViT-B/16 supernet step (benches/results/train_step_gpu_fused_kernels.json); forming ``W'`` in one
    launch for the batched build, its rebuild and merging replaced four or five PyTorch launches per layer without
    shortening the host-bound supernet steps (LLaMA-style forward 54 vs 59 ms, whole step 164 vs 150 ms; ViT-B/16
    50.5 vs 49.0 ms, within the host's noise)."""
    return (ENABLED and triton is not None and w0.is_cuda and w0.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and not torch.compiler.is_compiling())


if triton is not None:

    @triton.jit
    def _tile(X, M, N, s_m, s_n, BM: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr):
        """This program's (BM x BN) tile of X in float32, with its row, column and rank offsets and mask."""
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        x = tl.load(X + rm[:, None] * s_m + rn[None, :] * s_n, mask=mask, other=0.0).to(tl.float32)
        return x, rm, rn, tl.arange(0, BR), mask

    @triton.jit
    def _factor_tiles(D, U, rm, rn, rk, M, N, R, s_dm, s_dk, s_uk, s_un):
        """The (BM x BR) tile of a down factor and the (BR x BN) tile of its up factor, zero past rank R."""
        d = tl.load(D + rm[:, None] * s_dm + rk[None, :] * s_dk, mask=(rm[:, None] < M) & (rk[None, :] < R), other=0.0).to(tl.float32)
        u = tl.load(U + rk[:, None] * s_uk + rn[None, :] * s_un, mask=(rk[:, None] < R) & (rn[None, :] < N), other=0.0).to(tl.float32)
        return d, u

    @triton.jit(do_not_specialize=["RP", "RQ", "s_pdm", "s_pdk", "s_puk", "s_pun", "s_qdm", "s_qdk", "s_quk", "s_qun"])
    def _weight_fwd(W0, PD, PU, QD, QU, OUT, M, N, RP, RQ,
                    s_wm, s_wn, s_pdm, s_pdk, s_puk, s_pun, s_qdm, s_qdk, s_quk, s_qun, s_om, s_on,
                    HAS_P: tl.constexpr, HAS_Q: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr,
                    ROUNDING: tl.constexpr):
        w, rm, rn, rk, mask = _tile(W0, M, N, s_wm, s_wn, BM, BN, BR)
        out = w
        if HAS_P:
            pd, pu = _factor_tiles(PD, PU, rm, rn, rk, M, N, RP, s_pdm, s_pdk, s_puk, s_pun)
            out += w * tl.dot(pd, pu, input_precision="ieee")
        if HAS_Q:
            qd, qu = _factor_tiles(QD, QU, rm, rn, rk, M, N, RQ, s_qdm, s_qdk, s_quk, s_qun)
            out += tl.dot(qd, qu, input_precision="ieee")
        tl.store(OUT + rm[:, None] * s_om + rn[None, :] * s_on, out.to(OUT.dtype.element_ty, fp_downcast_rounding=ROUNDING), mask=mask)

    @triton.jit
    def _weight_bwd(G, W0, PD, PU, QD, QU, GPD, GPU, GQD, GQU, M, N, RP, RQ,
                    s_gm, s_gn, s_wm, s_wn, s_pdm, s_pdk, s_puk, s_pun, s_qdm, s_qdk, s_quk, s_qun,
                    HAS_P: tl.constexpr, HAS_Q: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr):
        g, rm, rn, rk, mask = _tile(G, M, N, s_gm, s_gn, BM, BN, BR)
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        # partial sums: GPD/GQD are [tiles along N, M, BR], GPU/GQU are [tiles along M, BR, N], all contiguous
        if HAS_P:
            w = tl.load(W0 + rm[:, None] * s_wm + rn[None, :] * s_wn, mask=mask, other=0.0).to(tl.float32)
            ga = g * w
            pd, pu = _factor_tiles(PD, PU, rm, rn, rk, M, N, RP, s_pdm, s_pdk, s_puk, s_pun)
            gpd = tl.dot(ga, tl.trans(pu), input_precision="ieee")
            gpu = tl.dot(tl.trans(pd), ga, input_precision="ieee")
            tl.store(GPD + pid_n * M * BR + rm[:, None] * BR + rk[None, :], gpd, mask=rm[:, None] < M)
            tl.store(GPU + pid_m * BR * N + rk[:, None] * N + rn[None, :], gpu, mask=rn[None, :] < N)
        if HAS_Q:
            qd, qu = _factor_tiles(QD, QU, rm, rn, rk, M, N, RQ, s_qdm, s_qdk, s_quk, s_qun)
            gqd = tl.dot(g, tl.trans(qu), input_precision="ieee")
            gqu = tl.dot(tl.trans(qd), g, input_precision="ieee")
            tl.store(GQD + pid_n * M * BR + rm[:, None] * BR + rk[None, :], gqd, mask=rm[:, None] < M)
            tl.store(GQU + pid_m * BR * N + rk[:, None] * N + rn[None, :], gqu, mask=rn[None, :] < N)


def _block_rank(*ranks: int) -> int:
    r = max(16, *ranks)
    return 1 << (r - 1).bit_length()


def _rounding(dtype: torch.dtype) -> Optional[str]:
    """Round to nearest even when narrowing to ``dtype``, as PyTorch's cast does (None: float32, no narrowing)."""
    return None if dtype == torch.float32 else "rtne"


def _strides(t: Optional[torch.Tensor]) -> tuple[int, int]:
    return (0, 0) if t is None else (t.stride(0), t.stride(1))


Factor = tuple[torch.Tensor, torch.Tensor, int, int]
"""A or B for ``weight_from_factors``: the stored down and up factors, the rank used, and the row stride to read the
down factor with (0 reads its first row for every row: a scalar broadcast to a column)."""


def weight_from_factors(w0: torch.Tensor, p: Optional[Factor], q: Optional[Factor], dtype: torch.dtype) -> torch.Tensor:
    """``W0 + W0 * (Pd Pu) + Qd Qu`` in ``dtype`` in one launch (no autograd), reading the stored factors as they
    are: the rank and the broadcast are kernel arguments, so no slice or view is made on the host."""
    m, n = w0.shape
    out = torch.empty((m, n), device=w0.device, dtype=dtype)
    pd, pu, rp, s_pdm = p if p is not None else (w0, w0, 0, 0)
    qd, qu, rq, s_qdm = q if q is not None else (w0, w0, 0, 0)
    _weight_fwd[(triton.cdiv(m, BLOCK_M), triton.cdiv(n, BLOCK_N))](
        w0, pd, pu, qd, qu, out, m, n, rp, rq, *w0.stride(), s_pdm, pd.stride(1), *pu.stride(), s_qdm, qd.stride(1), *qu.stride(),
        *out.stride(), HAS_P=p is not None, HAS_Q=q is not None, BM=BLOCK_M, BN=BLOCK_N, BR=_block_rank(rp, rq),
        ROUNDING=_rounding(dtype),
    )
    return out


def _sliced(down: Optional[torch.Tensor], up: Optional[torch.Tensor]) -> Optional[Factor]:
    """Low-rank factors already sliced to their rank (or None) as ``weight_from_factors`` reads them."""
    return None if down is None else (down, up, down.shape[1], down.stride(0))


def weight_grads(g: torch.Tensor, w0: torch.Tensor, pd: Optional[torch.Tensor], pu: Optional[torch.Tensor],
                 qd: Optional[torch.Tensor], qu: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], ...]:
    """The float32 gradients of pd, pu, qd, qu from ``g``, the gradient of ``W'``, in one pass (no autograd)."""
    rp = 0 if pd is None else pd.shape[1]
    rq = 0 if qd is None else qd.shape[1]
    br = _block_rank(rp, rq)
    m, n = w0.shape
    tm, tn = triton.cdiv(m, BLOCK_M), triton.cdiv(n, BLOCK_N)
    f32 = {"device": w0.device, "dtype": torch.float32}
    gpd = torch.empty((tn, m, br), **f32) if pd is not None else None
    gpu = torch.empty((tm, br, n), **f32) if pd is not None else None
    gqd = torch.empty((tn, m, br), **f32) if qd is not None else None
    gqu = torch.empty((tm, br, n), **f32) if qd is not None else None
    dummy = w0
    _weight_bwd[(tm, tn)](
        g, w0, pd if pd is not None else dummy, pu if pu is not None else dummy, qd if qd is not None else dummy, qu if qu is not None else dummy,
        gpd if gpd is not None else dummy, gpu if gpu is not None else dummy, gqd if gqd is not None else dummy, gqu if gqu is not None else dummy,
        m, n, rp, rq, *g.stride(), *w0.stride(), *_strides(pd), *_strides(pu), *_strides(qd), *_strides(qu),
        HAS_P=pd is not None, HAS_Q=qd is not None, BM=BLOCK_M, BN=BLOCK_N, BR=br,
    )
    p = (gpd.sum(0)[:, :rp], gpu.sum(0)[:rp]) if pd is not None else (None, None)
    q = (gqd.sum(0)[:, :rq], gqu.sum(0)[:rq]) if qd is not None else (None, None)
    return (*p, *q)


class FusedGLoRAWeight(torch.autograd.Function):
    """``W' = W0 + W0 * (pd @ pu) + qd @ qu`` in ``dtype`` as an autograd op (the convolution layers' path)."""

    @staticmethod
    def forward(ctx, w0, pd, pu, qd, qu, dtype):
        ctx.save_for_backward(w0, pd, pu, qd, qu)
        return weight_from_factors(w0, _sliced(pd, pu), _sliced(qd, qu), dtype)

    @staticmethod
    def backward(ctx, g):
        w0, pd, pu, qd, qu = ctx.saved_tensors
        grads = weight_grads(g, w0, pd, pu, qd, qu)
        needs = ctx.needs_input_grad[1:5]
        factors = (pd, pu, qd, qu)
        return (None, *(gr.to(f.dtype) if gr is not None and need else None for gr, f, need in zip(grads, factors, needs)), None)
