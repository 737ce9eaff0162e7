"""Provably 1-Lipschitz layers: constrained linear and convolutional layers, activations,
pooling and residual blocks, each with an exact or sound Lipschitz bound."""

from . import families
from .activations import Abs, FullSort, GroupSort, GroupSort2, Householder, MaxMin
from .bjorck import (
    bjorck_orthonormalize,
    power_iteration,
    spectral_bjorck,
    spectral_bjorck_linear,
)
from .cayley import CayleyConv2d, CayleyOrthogonal, cayley_linear
from .conv import AOLConv2d, LipschitzConv2d, SpectralConv2d
from .cpl import CPLConv2d, CPLLinear
from .linear import AOLLinear, SpectralLinear
from .lot import LOTConv2d, lot_conv, lot_linear
from .parametrizations import AOLRescale, SpectralBjorck
from .pooling import (
    InvertibleDownsampling,
    ScaledAvgPool2d,
    ScaledGlobalAvgPool2d,
    ScaledL2NormPool2d,
)
from .residual import Residual, SLLConv2d, SLLLinear
from .sandwich import SandwichConv2d, SandwichLinear
from .soc import SOCConv2d, soc_conv, soc_linear

__all__ = [
    "AOLConv2d",
    "AOLLinear",
    "AOLRescale",
    "Abs",
    "CPLConv2d",
    "CPLLinear",
    "CayleyConv2d",
    "CayleyOrthogonal",
    "FullSort",
    "GroupSort",
    "GroupSort2",
    "Householder",
    "InvertibleDownsampling",
    "LOTConv2d",
    "LipschitzConv2d",
    "MaxMin",
    "Residual",
    "SLLConv2d",
    "SLLLinear",
    "SOCConv2d",
    "SandwichConv2d",
    "SandwichLinear",
    "ScaledAvgPool2d",
    "ScaledGlobalAvgPool2d",
    "ScaledL2NormPool2d",
    "SpectralBjorck",
    "SpectralConv2d",
    "SpectralLinear",
    "bjorck_orthonormalize",
    "cayley_linear",
    "families",
    "lot_conv",
    "lot_linear",
    "power_iteration",
    "soc_conv",
    "soc_linear",
    "spectral_bjorck",
    "spectral_bjorck_linear",
]
