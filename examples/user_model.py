"""A user model for `scoresde compare --model examples/user_model.py:build`.

A small, randomly initialised convolutional eps-network stands in for a trained one; replace
``net`` with yours. The dict says what the network predicts, its schedule and time labels.
"""

import torch

import scoresde as sd


class TinyEpsNet(torch.nn.Module):
    def __init__(self, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.inp = torch.nn.Conv2d(channels + 1, width, 3, padding=1)
        self.mid = torch.nn.Conv2d(width, width, 3, padding=1)
        self.out = torch.nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        t = (label.float() / 1000).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        h = torch.nn.functional.silu(self.inp(torch.cat([x, t], dim=1)))
        h = torch.nn.functional.silu(self.mid(h))
        return self.out(h)


def build() -> dict:
    torch.manual_seed(0)  # the example's own weights; the library itself never seeds globally
    net = TinyEpsNet().eval()

    @torch.no_grad()
    def eps(x, label):
        return net(x, label)

    return {
        "net": eps,
        "shape": (3, 8, 8),
        "prediction": "eps",
        "schedule": sd.DiscreteSchedule.linear(1000),
        "time_label": sd.discrete_index(1000),
    }
