"""One file per paper's claim; importing the package registers them all."""

from visionzoo.lab.claims import (  # noqa: F401
    alexnet,
    degradation,
    densenet,
    efficientnet,
    googlenet,
    lenet,
    separable,
    transfer,
    vgg,
    vit,
)
