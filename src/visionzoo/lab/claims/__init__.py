"""One file per paper's claim; importing the package registers them all."""

from visionzoo.lab.claims import degradation, densenet, googlenet, lenet, separable, transfer, vgg  # noqa: F401
