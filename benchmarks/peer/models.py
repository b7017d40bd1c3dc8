"""The teacher and student of the side-by-side benchmark, in plain torch so that both virtual
environments (ours, and torchdistill's with its own torch) build exactly the same networks."""

from __future__ import annotations

from torch import nn


class ConvNet(nn.Module):
    """conv-BN-ReLU stages (each but the last halves the resolution), global pooling, linear.

    ``features`` is the pooled vector (the layer the feature presets match)."""

    def __init__(self, widths: list[int], classes: int, channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.body = nn.Sequential(*layers)
        self.features = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, classes)

    def forward(self, images):
        return self.head(self.features(self.body(images)))


TEACHER = [64, 128, 256, 256]
STUDENT = [8, 16, 32]
