"""AlexNet: ImageNet Classification with Deep Convolutional Neural Networks.

Alex Krizhevsky, Ilya Sutskever, Geoffrey E. Hinton. NIPS 2012.
https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks

Key idea: a deep convolutional network trained on GPUs wins ImageNet by a wide margin.
Five convolutional and three fully connected layers, ReLU instead of saturating units,
overlapping max-pooling, local response normalization, dropout in the first two fully
connected layers and heavy data augmentation let 60 million parameters learn from 1.2M images.

Two variants. `alexnet_2012` is the network of the paper: 96-256-384-384-256 kernels split
over two GPUs ("towers"). Layers 2, 4 and 5 see only the maps on their own GPU, which is
exactly a grouped convolution with `groups=2`; layer 3 and the fully connected layers see
both. Its 60,965,224 parameters are the paper's "60 million": conv 2,334,080 + fc
58,631,144. `alexnet` is torchvision's single-tower layout (64-192-384-256-256 kernels, no
response normalization, Krizhevsky's "One weird trick", arXiv:1404.5997): 61,100,840
parameters, and the layout whose ImageNet weights torchvision ships.

NOTE: `alexnet_2012` takes 227x227 inputs, not the paper's 224x224: an 11x11 kernel at
stride 4 over 224 pixels gives 54.25 positions, while the 55x55x96 first layer of the
paper's Figure 2 is exactly what 227 pixels without padding give (Caffe's reading,
bvlc_alexnet). The later maps, 27, 13 and 6, then match the figure too.
NOTE: Local response normalization uses the paper's k=2, n=5, alpha=1e-4, beta=0.75 with the
paper's formula (alpha multiplies the plain sum of squares; PyTorch's LocalResponseNorm
divides alpha by n, so we pass n * alpha). Each tower normalizes over its own maps, as the
two GPUs did.
NOTE: Both variants pool adaptively to 6x6 before the first fully connected layer (the
identity at the default input), so larger inputs work; the paper has a fixed 6x6 map.
NOTE: The paper trains with SGD (momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 on
plateaus); `alexnet_2012` starts from its initialization: weights N(0, 0.01), biases 1 in
conv2, conv4, conv5 and the hidden fully connected layers, 0 elsewhere.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers import ConvNormAct, conv_out_size
from visionzoo.models.base import FeatureInfo, ImageClassifier
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="AlexNet",
    year=2012,
    paper="ImageNet Classification with Deep Convolutional Neural Networks",
    url="https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks",
    authors="Alex Krizhevsky, Ilya Sutskever, Geoffrey E. Hinton",
)


class LocalResponseNorm(nn.Module):
    """b = a / (k + alpha * sum of a^2 over n adjacent maps)^beta, within each tower."""

    def __init__(self, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 towers: int = 1) -> None:  # fmt: skip
        super().__init__()
        self.n, self.alpha, self.beta, self.k, self.towers = n, alpha, beta, k, towers

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        x = x.reshape(B * self.towers, C // self.towers, H, W)  # one tower's maps per row
        x = F.local_response_norm(x, self.n, self.alpha * self.n, self.beta, self.k)
        return x.reshape(B, C, H, W)

    def extra_repr(self) -> str:
        return f"n={self.n}, alpha={self.alpha}, beta={self.beta}, k={self.k}, towers={self.towers}"


def _fc(in_features: int, out_features: int, dropout: float, dropout_first: bool) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = [
        ("fc", nn.Linear(in_features, out_features)),
        ("act", nn.ReLU(inplace=True)),
    ]
    drop: list[tuple[str, nn.Module]] = [("drop", nn.Dropout(dropout))]
    return nn.Sequential(OrderedDict(drop + layers if dropout_first else layers + drop))


def _pool5_side(size: int, kernel: int, stride: int, padding: int) -> int:
    """Side of the last map: conv1, then three 3x3/2 max-pools (the other convs keep size)."""
    size = conv_out_size(size, kernel, stride, padding)
    for _ in range(3):
        size = conv_out_size(size, 3, 2) if size >= 3 else 0
    return size


class AlexNet(ImageClassifier):
    """conv1 -> pool -> conv2 -> pool -> conv3 -> conv4 -> conv5 -> pool -> fc6 -> fc7 -> fc8."""

    supports_small_input = True

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        widths: tuple[int, int, int, int, int] = (64, 192, 384, 256, 256),
        towers: int = 1,  # 2: the paper's two GPUs; conv2, conv4, conv5 see only their tower
        lrn: bool = False,  # local response normalization after conv1 and conv2
        conv1_padding: int = 2,
        dropout: float = 0.5,
        dropout_first: bool = True,  # torchvision drops before fc6/fc7, the paper after
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.small_input = in_channels, image_size, small_input
        w1, w2, w3, w4, w5 = widths
        k1, s1, p1 = (3, 1, 1) if small_input else (11, 4, conv1_padding)
        conv = partial(ConvNormAct, norm_layer=None, bias=True)
        self.conv1 = conv(in_channels, w1, k1, s1, p1)
        self.norm1 = LocalResponseNorm(towers=towers) if lrn else nn.Identity()
        self.pool1 = nn.MaxPool2d(3, 2)  # overlapping pooling: 3x3 windows, stride 2
        self.conv2 = conv(w1, w2, 5, groups=towers)
        self.norm2 = LocalResponseNorm(towers=towers) if lrn else nn.Identity()
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3 = conv(w2, w3, 3)  # sees both towers
        self.conv4 = conv(w3, w4, 3, groups=towers)
        self.conv5 = conv(w4, w5, 3, groups=towers)
        self.pool5 = nn.MaxPool2d(3, 2)
        self.min_image_size = next(s for s in range(1, 512) if _pool5_side(s, k1, s1, p1) >= 1)
        self.pooled_size = 1 if small_input else 6
        self.fc6 = _fc(w5 * self.pooled_size**2, 4096, dropout, dropout_first)
        self.fc7 = _fc(4096, 4096, dropout, dropout_first)
        self.num_features, self.num_classes = 4096, num_classes
        self.classifier = nn.Linear(4096, num_classes) if num_classes > 0 else nn.Identity()
        stem = 1 if small_input else 4
        self.feature_info = [
            FeatureInfo("conv1", w1, stem),
            FeatureInfo("conv2", w2, stem * 2),
            FeatureInfo("conv3", w3, stem * 4),
            FeatureInfo("conv4", w4, stem * 4),
            FeatureInfo("conv5", w5, stem * 4),
        ]

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Own loop: no stages; each conv level is read after its LRN."""
        c1 = self.norm1(self.conv1(x))
        c2 = self.norm2(self.conv2(self.pool1(c1)))
        c3 = self.conv3(self.pool2(c2))
        c4 = self.conv4(c3)
        return [c1, c2, c3, c4, self.conv5(c4)]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool5(self.forward_intermediates(x)[-1])  # (B, 256, 6, 6) at 224/227

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = F.adaptive_avg_pool2d(x, self.pooled_size).flatten(1)  # (B, C, 6, 6) -> (B, 36C)
        x = self.fc7(self.fc6(x))
        return x if pre_logits else self.classifier(x)

    @torch.no_grad()
    def init_paper(self) -> None:
        """Section 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for layer in ("conv2.conv", "conv4.conv", "conv5.conv", "fc6.fc", "fc7.fc"):
            nn.init.ones_(self.get_parameter(f"{layer}.bias"))


_SMALL = "conv1 becomes 3x3 stride 1 (was 11x11 stride 4); fc6 reads globally pooled features"


@register_model(FAMILY, params=61_100_840, params_source="torchvision 0.29.1 (AlexNet_Weights)",
                min_image_size=63, small_input=_SMALL, torchvision="alexnet")  # fmt: skip
def alexnet(**kwargs) -> AlexNet:
    """torchvision's single-tower AlexNet: 64-192-384-256-256 kernels, no LRN."""
    return AlexNet(widths=(64, 192, 384, 256, 256), **kwargs)


@register_model(FAMILY, params=60_965_224, params_source="computed from the paper's layer spec",
                image_size=227, min_image_size=67, small_input=_SMALL)  # fmt: skip
def alexnet_2012(**kwargs) -> AlexNet:
    """The paper's two-tower AlexNet: 96-256-384-384-256 kernels, LRN, 227x227 input."""
    model = AlexNet(widths=(96, 256, 384, 384, 256), towers=2, lrn=True, conv1_padding=0,
                    dropout_first=False, **kwargs)  # fmt: skip
    model.init_paper()
    return model


@register_converter("torchvision", "alexnet")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    convs = {"0": "conv1", "3": "conv2", "6": "conv3", "8": "conv4", "10": "conv5"}
    rules = [(rf"^features\.{i}\.", f"{name}.conv.") for i, name in convs.items()]
    rules += [(r"^classifier\.1\.", "fc6.fc."), (r"^classifier\.4\.", "fc7.fc.")]
    return rename_keys(state_dict, rules + [(r"^classifier\.6\.", "classifier.")])
