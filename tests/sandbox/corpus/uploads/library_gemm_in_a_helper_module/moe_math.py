import torch


def expert_mlp(x, w1, w2):
    gate_up = torch.matmul(x, w1.T)
    inter = w2.shape[1]
    return torch.matmul(torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:], w2.T)
