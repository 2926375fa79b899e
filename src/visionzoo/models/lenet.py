"""LeNet-5: Gradient-Based Learning Applied to Document Recognition.

Yann LeCun, Leon Bottou, Yoshua Bengio, Patrick Haffner. Proceedings of the IEEE 86(11),
1998. http://yann.lecun.com/exdb/publis/pdf/lecun-01a.pdf

Key idea: learn the features from pixels instead of engineering them. Local receptive
fields, shared weights (convolution) and spatial subsampling build invariance to small
shifts and distortions; seven trainable layers C1-S2-C3-S4-C5-F6-output map a 32x32 image
to ten classes, trained end to end by gradient descent.

Two variants. `lenet5_paper` follows the paper: scaled tanh f(a) = 1.7159 tanh(2a/3),
subsampling layers S2 and S4 that sum each 2x2 window, multiply it by a trainable
coefficient and add a trainable bias, C3's partial connection table (Table I), and a
Euclidean RBF output layer whose 84-dimensional centres are fixed. Its 60,000 trainable
parameters are exactly the paper's count: C1 156 + S2 12 + C3 1,516 + S4 32 + C5 48,120 +
F6 10,164. `lenet5` is the modern reading (ReLU, max-pooling, full C3, a linear output):
61,706 parameters, 1,706 more than the paper's because C3 is fully connected (2,416
instead of 1,516) and the 10-way output is a trainable linear layer (850) instead of
fixed RBF centres.

NOTE: The paper's RBF centres are hand-drawn 7x12 bitmaps of the ASCII characters; those
bitmaps are not published, so `lenet5_paper` uses a fixed random +-1 code (a buffer, not a
parameter) with the same role. Its logits are the negative squared distances to the centres.
NOTE: The paper trains with its MAP criterion and a stochastic diagonal Levenberg-Marquardt
method; visionzoo trains both variants with cross-entropy and SGD/AdamW.
NOTE: The paper scales pixels so that the background is -0.1 and the foreground 1.175;
visionzoo normalizes with the dataset's mean and standard deviation.
NOTE: 28x28 digits are padded by 2 pixels of background to 32x32, as the paper does; the
data pipeline does this on the raw pixels before normalization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.models.base import FeatureInfo, ImageClassifier
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="LeNet",
    year=1998,
    paper="Gradient-Based Learning Applied to Document Recognition",
    url="http://yann.lecun.com/exdb/publis/pdf/lecun-01a.pdf",
    authors="Yann LeCun, Leon Bottou, Yoshua Bengio, Patrick Haffner",
)

# Table I of the paper: which S2 feature maps (rows) each C3 feature map (column) sees.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (Appendix A),
    so that f(1) = 1."""

    def forward(self, x: Tensor) -> Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """S2/S4: sum each 2x2 window, times a trainable coefficient, plus a trainable bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, 2) * 4  # sum of the four inputs
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PartialConv2d(nn.Module):
    """C3: a 5x5 convolution in which output map j sees only the input maps in `table[j]`.

    Only the connected kernels are parameters (60 of the 96), so the count is the paper's.
    """

    index: Tensor  # buffer: where each connected kernel sits in the full weight

    def __init__(self, table: tuple[tuple[int, ...], ...], in_channels: int, kernel_size: int):
        super().__init__()
        pairs = [(j, i) for j, inputs in enumerate(table) for i in inputs]
        self.out_channels, self.in_channels, self.kernel_size = len(table), in_channels, kernel_size
        flat = torch.tensor([j * in_channels + i for j, i in pairs])
        self.register_buffer("index", flat, persistent=False)
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(len(table)))
        # The paper's initialisation: uniform in +-2.4 / fan-in (Appendix A).
        bounds = [2.4 / (len(t) * kernel_size**2) for t in table for _ in t]
        nn.init.uniform_(self.weight, -1, 1)
        with torch.no_grad():
            self.weight.mul_(torch.tensor(bounds, device=self.weight.device).view(-1, 1, 1))
            nn.init.uniform_(self.bias, -2.4 / (3 * kernel_size**2), 2.4 / (3 * kernel_size**2))

    def full_weight(self) -> Tensor:
        k = self.kernel_size
        w = self.weight.new_zeros(self.out_channels * self.in_channels, k, k)
        w = w.index_copy(0, self.index, self.weight)
        return w.view(self.out_channels, self.in_channels, k, k)  # (60, k, k) -> (16, 6, k, k)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.full_weight(), self.bias)


class RBFOutput(nn.Module):
    """Euclidean RBF units: logit_i = -||x - c_i||^2 with fixed +-1 centres c_i."""

    centres: Tensor  # (num_classes, in_features) buffer

    def __init__(self, in_features: int, num_classes: int, seed: int = 1998) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        code = torch.randint(0, 2, (num_classes, in_features), generator=g).float() * 2 - 1
        self.register_buffer("centres", code)

    def forward(self, x: Tensor) -> Tensor:
        return -torch.cdist(x, self.centres).pow(2)


class LeNet5(ImageClassifier):
    """C1 -> S2 -> C3 -> S4 -> C5 -> F6 -> output, on a 32x32 input."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 32,
        paper: bool = False,
    ) -> None:
        super().__init__()
        if image_size < 32:
            raise ValueError(f"LeNet-5 takes 32x32 inputs (pad 28x28 by 2), got {image_size}")
        act: type[nn.Module] = ScaledTanh if paper else nn.ReLU
        self.paper, self.in_channels, self.image_size = paper, in_channels, image_size
        self.min_image_size, self.num_features = 32, 84
        self.c1 = nn.Sequential(nn.Conv2d(in_channels, 6, 5), act())
        self.s2 = nn.Sequential(Subsampling(6), ScaledTanh()) if paper else nn.MaxPool2d(2)
        c3: nn.Module = PartialConv2d(C3_TABLE, 6, 5) if paper else nn.Conv2d(6, 16, 5)
        self.c3 = nn.Sequential(c3, act())
        self.s4 = nn.Sequential(Subsampling(16), ScaledTanh()) if paper else nn.MaxPool2d(2)
        side = ((image_size - 4) // 2 - 4) // 2  # S4 output side: 5 for a 32x32 input
        self.c5 = nn.Sequential(nn.Conv2d(16, 120, side), act())
        self.f6 = nn.Sequential(nn.Linear(120, 84), act())
        self.num_classes = num_classes
        self.classifier = self._make_output(num_classes)
        self.feature_info = [
            FeatureInfo("c1", 6, 1),
            FeatureInfo("s2", 6, 2),
            FeatureInfo("c3", 16, 2),
            FeatureInfo("s4", 16, 4),
            FeatureInfo("c5", 120, 4 * side),
        ]
        if paper:
            self._init_paper()

    def _make_output(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return RBFOutput(84, num_classes) if self.paper else nn.Linear(84, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = self._make_output(num_classes)

    @torch.no_grad()
    def _init_paper(self) -> None:
        """Uniform weights in +-2.4 / fan-in, as Appendix A prescribes."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                bound = 2.4 / (m.weight[0].numel())
                nn.init.uniform_(m.weight, -bound, bound)
                if m.bias is not None:
                    nn.init.uniform_(m.bias, -bound, bound)

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Own loop: the levels are the named layers c1-c5, not stages."""
        out = []
        for layer in (self.c1, self.s2, self.c3, self.s4, self.c5):
            x = layer(x)
            out.append(x)
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        return self.c5(self.s4(self.c3(self.s2(self.c1(x)))))  # (B, 120, 1, 1) at 32x32

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))  # (B, 120, 1, 1) -> (B, 120); also averages larger inputs' maps
        x = self.f6(x)
        return x if pre_logits else self.classifier(x)


_COMMON = dict(image_size=32, in_channels=1, num_classes=10, min_image_size=32)


@register_model(FAMILY, params=61_706, params_source="computed from the layer spec", **_COMMON)
def lenet5(**kwargs) -> LeNet5:
    """Modern LeNet-5: ReLU, max-pooling, full C3, linear output."""
    return LeNet5(paper=False, **kwargs)


@register_model(FAMILY, params=60_000, params_source="paper (LeCun et al. 1998)", **_COMMON)
def lenet5_paper(**kwargs) -> LeNet5:
    """LeNet-5 as published: scaled tanh, trainable subsampling, C3 table, RBF output."""
    return LeNet5(paper=True, **kwargs)
