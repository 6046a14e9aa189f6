"""Named evaluation protocols: every number this project reports says which one produced it.

``tcl``     TCL's protocol, which SynSeg's Table 2 baselines use: short side 448 (long side
            at most 2048), 448x448 windows with stride 224, TCL's 9 templates, a constant
            background score of 0.4 with PAMR and 0.5 without; PAMR on, as in TCL's eval.yml.
``sclip``   The training-free family's protocol (SCLIP, NACLIP): short side 336, 224x224
            windows with stride 112, the 80 OpenAI ImageNet templates, no PAMR. The
            background rule stays the constant score (SCLIP's renamed classes and
            background word lists are not reproduced; see docs/EVALUATION.md).
``synthetic`` The CPU benchmark's 64-px procedural scenes: one 64x64 window and the one
            template ("a photo of a {}.") the benchmark trains with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    short_side: int | None  # resize so the short side has this length (None: keep the image size)
    max_long_side: int | None  # cap on the long side after resizing (mmseg's img_scale=(2048, 448))
    crop: int  # square sliding-window size in pixels
    stride: int  # window step in pixels
    template_set: str  # prompt-template set for the class names
    pamr: bool  # PAMR refinement of each window's class scores
    background_with_pamr: float = 0.4
    background_without_pamr: float = 0.5
    background_override: float | None = None  # an explicit constant background score (None: the rule above)

    def __post_init__(self) -> None:
        if self.crop <= 0 or self.stride <= 0:
            raise ValueError(f"crop ({self.crop}) and stride ({self.stride}) must be positive")
        if self.stride > self.crop:
            raise ValueError(f"stride {self.stride} > crop {self.crop} would leave pixels without a prediction")
        if self.short_side is not None and self.short_side <= 0:
            raise ValueError(f"short_side must be positive, got {self.short_side}")

    @property
    def background_threshold(self) -> float:
        """The constant background score for datasets with a background class."""
        if self.background_override is not None:
            return self.background_override
        return self.background_with_pamr if self.pamr else self.background_without_pamr

    def describe(self, background_class: bool = True) -> str:
        """One line naming every setting, printed with every result (the background score only where it is used)."""
        size = f"short side {self.short_side}" if self.short_side else "native size"
        if self.short_side and self.max_long_side:
            size += f" (long side <= {self.max_long_side})"
        return (
            f"protocol {self.name}: {size}, {self.crop}x{self.crop} windows stride {self.stride}, "
            f"templates {self.template_set}, PAMR {'on' if self.pamr else 'off'}, "
            + (f"background score {self.background_threshold:g}" if background_class else "no background class")
        )

    def to_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "background_threshold": self.background_threshold}


PROTOCOLS: dict[str, Protocol] = {
    "tcl": Protocol("tcl", short_side=448, max_long_side=2048, crop=448, stride=224, template_set="tcl", pamr=True),
    "sclip": Protocol("sclip", short_side=336, max_long_side=2048, crop=224, stride=112, template_set="imagenet80", pamr=False),
    "synthetic": Protocol("synthetic", short_side=64, max_long_side=None, crop=64, stride=32, template_set="single", pamr=False),
}


def list_protocols() -> list[str]:
    return sorted(PROTOCOLS)


def get_protocol(name: str, **overrides: object) -> Protocol:
    """A named protocol with some settings replaced.

    ``None`` leaves a setting unchanged; ``short_side=0`` means "evaluate at the native size".
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose one of {list_protocols()}")
    changes = {key: value for key, value in overrides.items() if value is not None}
    if changes.get("short_side") == 0:
        changes["short_side"] = None
    return dataclasses.replace(PROTOCOLS[name], **changes)  # type: ignore[arg-type]
