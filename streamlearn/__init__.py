"""streamlearn: an online meta-learned feature extractor that learns from a Kafka stream.

The package root stays light (no torch import); the learner lives in
``streamlearn.learner``, the command line in ``streamlearn.cli``.

>>> import streamlearn
>>> streamlearn.__version__
'0.1.0'
"""

from streamlearn.errors import StreamlearnError

__all__ = ["__version__", "StreamlearnError"]

__version__ = "0.1.0"
