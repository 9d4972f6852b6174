"""The settings of ``medattn explain`` (:func:`medattn.explain.pipeline.explain_runs`), declared
once with their defaults and checks; the outputs record them (``analysis/explain/settings.json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from medattn.errors import ArgumentError

__all__ = ["CHOICES", "ExplainSettings"]

CHOICES = ("split", "best")  # how the explained run of each model is chosen


@dataclass(frozen=True)
class ExplainSettings:
    """What Table 4 depends on (docs/explain.md).

    ``n_mean``: images averaged for the mean map (fewer if the pool is smaller); ``choose``:
    the run explained per model, ``split`` (the runs of one common split, so every model is
    shown the same test images) or ``best`` (each model's best run; see
    :func:`medattn.explain.pipeline.select_runs`); ``image_ids``: example images (one per class)
    instead of the reproducible choice; ``border``: width of the border / corner regions as a
    fraction of the image side; ``seed``: seed of the image choice.
    """

    n_mean: int = 500
    choose: str = "split"
    image_ids: tuple[str, ...] | None = None
    border: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.n_mean, bool) or not isinstance(self.n_mean, int) or self.n_mean < 1:
            raise ArgumentError(f"{{n_mean}} must be a whole number >= 1, got {self.n_mean!r}.",
                                "n_mean")
        if self.choose not in CHOICES:
            raise ArgumentError(f"{{choose}} must be 'split' or 'best', got {self.choose!r}.",
                                "choose")
        if not (isinstance(self.border, (int, float)) and 0 < self.border < 0.5):
            raise ArgumentError(f"{{border}} must lie in (0, 0.5) (a fraction of the image "
                                f"side), got {self.border!r}.", "border")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ArgumentError(f"{{seed}} must be a whole number >= 0, got {self.seed!r}.",
                                "seed")
        if self.image_ids is not None:  # a list from a notebook: kept as a tuple (frozen)
            object.__setattr__(self, "image_ids", tuple(str(i) for i in self.image_ids))

    def as_dict(self) -> dict:
        """The settings as the outputs record them."""
        d = asdict(self)
        d["image_ids"] = list(self.image_ids) if self.image_ids is not None else None
        return d
