"""What the benchmark suite measures: recipe/twin pairs, growth studies and training steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Case:
    """A recipe and its library twin, computing the same thing on the same inputs."""

    name: str
    recipe: Callable
    twin: Callable
    make: Callable[[Any], tuple]  # size -> inputs
    sizes: list
    recipe_name: str
    twin_name: str
    describe: Callable[[Any], str] = field(default=lambda size: str(size))


@dataclass
class GrowthStudy:
    name: str
    size_name: str
    sizes: list
    make: Callable[[int], tuple]
    variants: dict


@dataclass
class TrainingStep:
    name: str
    description: str
    make: Callable[[], tuple]  # -> (step function, inputs)


def comparisons() -> list[Case]:
    return []


def growth_studies() -> list[GrowthStudy]:
    return []


def training_steps() -> list[TrainingStep]:
    return []
