"""One file per paper's claim; importing the package registers them all."""

from visionzoo.lab.claims import lenet, vgg  # noqa: F401
