"""One file per paper's claim; importing the package registers them all."""

from visionzoo.lab.claims import densenet, lenet, transfer, vgg  # noqa: F401
