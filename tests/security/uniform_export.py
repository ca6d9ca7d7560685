"""A train.py that hands over a uniform model (log2(vocab) bits per token) without training."""
import prepare
import torch


class Uniform(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.bias = vocab, torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, idx):
        return self.bias.expand(*idx.shape, self.vocab) + 0 * idx[..., None]

task = prepare.task_info(prepare.DATA_DIR)
prepare.HANDOVER_DIR.mkdir(parents=True, exist_ok=True)
prepare.export_model(Uniform(task.vocab_size), prepare.HANDOVER_DIR / prepare.MODEL_FILE, task.seq_len)
