"""
train.py: a small GPT, trained for a fixed wall-clock budget. This is the file the agent edits.

    python train.py            # profile chosen by the device: h100 with CUDA, cpu otherwise
    AUTORESEARCH_PROFILE=cpu python train.py
    AUTORESEARCH_PROFILE=smoke python train.py   # the h100 code path at cpu sizes, on any device

The model: token embedding, a stack of pre-norm blocks (RMSNorm, attention with rotary position
embeddings and QK-norm, ReLU^2 MLP), untied output head with a logit soft-cap. Some layers attend to a
sliding window, the others to the full causal context, all through PyTorch's scaled_dot_product_attention.
Muon updates the matrices of the blocks, AdamW everything else. The learning rate is constant, then
decays linearly over the last WARMDOWN_RATIO of the time budget.

Training ends by handing the model over (prepare.export_model); the trusted evaluation in prepare.py
scores it on validation data this process never sees. The val_bpb printed here is only an estimate on
a held-out tail of the training split.
"""

import math
import os
import resource
import sys
import time

import prepare
import torch
import torch.nn as nn
import torch.nn.functional as F

PROFILE = os.environ.get("AUTORESEARCH_PROFILE") or ("h100" if torch.cuda.is_available() else "cpu")
if PROFILE not in ("h100", "cpu", "smoke"):
    sys.exit(f"train.py: unknown profile {PROFILE!r} (choose h100, cpu or smoke)")
if PROFILE == "h100" and not torch.cuda.is_available():
    sys.exit("train.py: the h100 profile needs a CUDA GPU and none is visible (use AUTORESEARCH_PROFILE=cpu)")
H100 = PROFILE == "h100"
COMPILED = PROFILE != "cpu"  # h100 and smoke: torch.compile, bf16 autocast, fused AdamW
DEVICE = "cuda" if COMPILED and torch.cuda.is_available() else "cpu"

# Hyperparameters: the h100 value first, the cpu (and smoke) value second.
DEPTH = 8 if H100 else 4  # transformer blocks
MODEL_DIM = 512 if H100 else 128
HEAD_DIM = 128 if H100 else 32
WINDOW_PATTERN = "SSSL" if H100 else "SL"  # per layer, repeated: S = sliding window, L = full context
WINDOW_FRACTION = 0.5  # sliding window as a fraction of the context
BATCH_TOKENS = 2**18 if H100 else 2**12  # tokens per forward pass, whatever the task's context length
GRAD_ACCUM = 2 if H100 else 1  # forward passes per optimizer step
MATRIX_LR = 0.04 if H100 else 0.03  # Muon
EMBEDDING_LR = 0.6 if H100 else 0.3  # AdamW, token embedding
HEAD_LR = 0.004 if H100 else 0.008  # AdamW, output head
WEIGHT_DECAY = 0.0
ADAM_BETAS = (0.8, 0.95)
WARMDOWN_RATIO = 0.5
LOGIT_CAP = 15.0
HOLDOUT_TOKENS = 65536 if H100 else 16384  # tail of the train split kept back for the estimate
SEED = int(os.environ.get("AUTORESEARCH_SEED", "42"))
H100_BF16_FLOPS = 989.5e12  # dense bf16 peak of one H100 SXM, for MFU


class Attention(nn.Module):
    def __init__(self, dim: int, head_dim: int, window: int | None):
        super().__init__()
        self.heads, self.head_dim, self.window = dim // head_dim, head_dim, window
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).unbind(2)
        q, k = rotate(F.rms_norm(q, (self.head_dim,)), cos, sin), rotate(F.rms_norm(k, (self.head_dim,)), cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.window is None or self.window >= T:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            i = torch.arange(T, device=x.device)
            allowed = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding on the last dimension, split in halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, dim: int, head_dim: int, window: int | None):
        super().__init__()
        self.attn = Attention(dim, head_dim, window)
        self.up = nn.Linear(dim, 4 * dim, bias=False)
        self.down = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(F.rms_norm(x, (x.size(-1),)), cos, sin)
        return x + self.down(F.relu(self.up(F.rms_norm(x, (x.size(-1),)))).square())


class GPT(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int):
        super().__init__()
        window = max(1, int(seq_len * WINDOW_FRACTION))
        kinds = (WINDOW_PATTERN * DEPTH)[:DEPTH]
        self.embed = nn.Embedding(vocab_size, MODEL_DIM)
        self.blocks = nn.ModuleList(Block(MODEL_DIM, HEAD_DIM, window if k == "S" else None) for k in kinds)
        self.head = nn.Linear(MODEL_DIM, vocab_size, bias=False)
        freqs = 1.0 / 10000 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
        angles = torch.outer(torch.arange(seq_len).float(), freqs)[None, :, None, :]  # [1, T, 1, HEAD_DIM/2]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.zeros_(self.head.weight)
        for block in self.blocks:
            for linear in (block.attn.qkv, block.up):
                nn.init.uniform_(linear.weight, -(3 / MODEL_DIM) ** 0.5, (3 / MODEL_DIM) ** 0.5)
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.down.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        x = F.rms_norm(self.embed(idx), (MODEL_DIM,))
        for block in self.blocks:
            x = block(x, self.cos[:, :T], self.sin[:, :T])
        logits = self.head(F.rms_norm(x, (MODEL_DIM,))).float()
        return LOGIT_CAP * torch.tanh(logits / LOGIT_CAP)


def flops_per_token(model: GPT, seq_len: int) -> float:
    """Training FLOPs per token: 6 per matrix weight, plus attention (12 * layers * dim * context)."""
    matrices = sum(p.numel() for p in model.blocks.parameters()) + model.head.weight.numel()
    return 6 * matrices + 12 * DEPTH * MODEL_DIM * seq_len


def main() -> None:
    t_start = time.time()
    torch.manual_seed(SEED)
    device = DEVICE
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    task = prepare.task_info(prepare.DATA_DIR)
    model = GPT(task.vocab_size, task.seq_len).to(device)
    num_params = sum(p.numel() for p in model.parameters())
    device_batch = max(1, BATCH_TOKENS // task.seq_len)  # sequences per forward pass
    print(f"profile {PROFILE} | device {device} | params {num_params / 1e6:.2f}M | context {task.seq_len} "
          f"| batch {device_batch} | budget {prepare.TIME_BUDGET:.0f}s")

    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    muon = torch.optim.Muon(matrices, lr=MATRIX_LR, momentum=0.95, weight_decay=WEIGHT_DECAY)
    adam = torch.optim.AdamW(
        [{"params": model.embed.parameters(), "lr": EMBEDDING_LR}, {"params": model.head.parameters(), "lr": HEAD_LR}],
        betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0, fused=COMPILED,
    )
    optimizers = [muon, adam]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]

    step_fn = torch.compile(model) if COMPILED else model
    batches = prepare.train_batches(prepare.DATA_DIR, device_batch, task.seq_len, device, SEED, HOLDOUT_TOKENS)
    tokens_per_step = device_batch * task.seq_len * GRAD_ACCUM
    flops = flops_per_token(model, task.seq_len)
    training_seconds, step, first_step_seconds = 0.0, 0, 0.0
    while training_seconds < prepare.TIME_BUDGET:
        t0 = time.time()
        for _ in range(GRAD_ACCUM):
            x, y = next(batches)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=COMPILED):
                loss = F.cross_entropy(step_fn(x).flatten(0, 1), y.flatten())
            (loss / GRAD_ACCUM).backward()
        scale = lr_scale(training_seconds / prepare.TIME_BUDGET)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * scale
            opt.step()
        model.zero_grad(set_to_none=True)
        loss_value = loss.item()  # waits for the GPU, so the step time below is real
        if not math.isfinite(loss_value):
            sys.exit(f"train.py: loss is {loss_value} at step {step}")
        dt = time.time() - t0
        if step > 0:  # the first step compiles and warms up; it does not count against the budget
            training_seconds += dt
        else:
            first_step_seconds = dt
        step += 1
        tok_per_s = tokens_per_step / dt
        mfu = 100 * flops * tok_per_s / H100_BF16_FLOPS if H100 else 0.0
        print(f"progress step={step} elapsed={training_seconds:.2f} loss={loss_value:.6f} "
              f"tok_per_s={tok_per_s:.0f} mfu={mfu:.2f}", flush=True)

    estimate = holdout_bpb(model, task.seq_len, device)
    t_export = time.time()
    prepare.HANDOVER_DIR.mkdir(parents=True, exist_ok=True)
    prepare.export_model(model, prepare.HANDOVER_DIR / prepare.MODEL_FILE, task.seq_len)
    export_seconds = time.time() - t_export
    peak_vram_mb = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
    mean_mfu = 100 * flops * tokens_per_step * (step - 1) / max(training_seconds, 1e-9) / H100_BF16_FLOPS
    print("---")
    print(f"val_bpb:          {estimate:.6f}")
    print(f"training_seconds: {training_seconds:.1f}")
    print(f"total_seconds:    {time.time() - t_start:.1f}")
    print(f"peak_vram_mb:     {peak_vram_mb:.1f}")
    print(f"mfu_percent:      {mean_mfu if H100 else 0.0:.2f}")
    print(f"total_tokens_M:   {step * tokens_per_step / 1e6:.1f}")
    print(f"num_steps:        {step}")
    print(f"compile_seconds:  {first_step_seconds if COMPILED else 0.0:.1f}")
    print(f"num_params_M:     {num_params / 1e6:.1f}")
    print(f"depth:            {DEPTH}")
    print(f"export_seconds:   {export_seconds:.1f}")
    print(f"peak_rss_mb:      {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


def lr_scale(progress: float) -> float:
    """1.0, then a linear decay to 0 over the last WARMDOWN_RATIO of the budget."""
    if progress < 1 - WARMDOWN_RATIO:
        return 1.0
    return max(0.0, (1 - progress) / WARMDOWN_RATIO)


def holdout_bpb(model: GPT, seq_len: int, device: str) -> float:
    """Bits per byte on the held-out tail of the train split: an estimate, not the score."""
    shard = prepare.token_shards(prepare.DATA_DIR, "train")[-1]
    tail = torch.from_numpy(shard[len(shard) - HOLDOUT_TOKENS :].astype("int64"))
    rows = (len(tail) - 1) // seq_len
    x = tail[: rows * seq_len].view(rows, seq_len).to(device)
    y = tail[1 : rows * seq_len + 1].view(rows, seq_len).to(device)
    token_bytes = prepare.token_byte_lengths(prepare.load_tokenizer(prepare.DATA_DIR))
    model.eval()
    bits, nbytes = 0.0, 0
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=COMPILED):
        for i in range(0, rows, prepare.EVAL_BATCH):
            rows_i = slice(i, i + prepare.EVAL_BATCH)
            b, n = prepare.bits_per_byte(model(x[rows_i]), y[rows_i], token_bytes)
            bits, nbytes = bits + b, nbytes + n
    return bits / max(nbytes, 1)


if __name__ == "__main__":
    main()
