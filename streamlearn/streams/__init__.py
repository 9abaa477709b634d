"""Built-in sample streams for demos, tests and benchmarks (no downloads).

Every generator yields dicts in the Sample format of DESIGN.md §2 and is
deterministic for a given seed.
"""

from streamlearn.streams.base import SampleDict, to_arrays
from streamlearn.streams.demo import demo_stream
from streamlearn.streams.digits import DigitsConcept, digits_arrays, digits_concepts, digits_permutations, switch_points
from streamlearn.streams.fewshot import (
    FewShotSplit,
    class_stream,
    digits_novel_split,
    novel_class_split,
    synthetic_classes,
)
from streamlearn.streams.jsonl import write_jsonl
from streamlearn.streams.synth import led_stream, rbf_stream, river_switch_points

__all__ = [
    "DigitsConcept",
    "FewShotSplit",
    "SampleDict",
    "class_stream",
    "demo_stream",
    "digits_arrays",
    "digits_concepts",
    "digits_novel_split",
    "digits_permutations",
    "led_stream",
    "novel_class_split",
    "rbf_stream",
    "river_switch_points",
    "switch_points",
    "synthetic_classes",
    "to_arrays",
    "write_jsonl",
]
