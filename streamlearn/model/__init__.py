"""The model parts: encoder, standardiser, prototype head, neighbour vote, linear head, fusion, head choice,
class registry, class prior, memory, meta step, distillation."""

from streamlearn.model.choice import HEADS, HeadChoice
from streamlearn.model.classes import ClassRegistry, Label, as_label
from streamlearn.model.distill import Teacher, distillation_loss
from streamlearn.model.encoder import Encoder
from streamlearn.model.fusion import fuse
from streamlearn.model.linear import LinearHead, linear_inputs, linear_width
from streamlearn.model.memory import ClassMemory
from streamlearn.model.meta import MetaStep, protonet_loss
from streamlearn.model.neighbours import NeighbourVote
from streamlearn.model.normalizer import OnlineStandardizer
from streamlearn.model.prior import ClassPrior
from streamlearn.model.prototypes import PrototypeHead

__all__ = [
    "HEADS",
    "ClassMemory",
    "ClassPrior",
    "ClassRegistry",
    "as_label",
    "Encoder",
    "HeadChoice",
    "Label",
    "LinearHead",
    "MetaStep",
    "NeighbourVote",
    "OnlineStandardizer",
    "PrototypeHead",
    "Teacher",
    "distillation_loss",
    "fuse",
    "linear_inputs",
    "linear_width",
    "protonet_loss",
]
