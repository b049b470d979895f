"""Layers with forward/backward, parameters with .data/.grad, no autograd graph.

See :mod:`fastconv.nn.module` for the protocol and the canonical training step.
"""

from fastconv.nn.activation import Dropout, LeakyReLU, ReLU, ScaledTanh, Sigmoid, Tanh
from fastconv.nn.conv import Conv2d, ConvTranspose2d
from fastconv.nn.linear import Flatten, Linear
from fastconv.nn.loss import CrossEntropyLoss
from fastconv.nn.module import Module, Parameter, Residual, Sequential
from fastconv.nn.pool import AvgPool2d, LPPool2d, MaxPool2d, Subsampling

__all__ = [
    "AvgPool2d",
    "Conv2d",
    "ConvTranspose2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "LeakyReLU",
    "Linear",
    "LPPool2d",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Residual",
    "ScaledTanh",
    "Sequential",
    "Sigmoid",
    "Subsampling",
    "Tanh",
]
