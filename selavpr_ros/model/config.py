"""Configuration of the SelaVPR network: which DINOv2 backbone, how deep, registers, input size.

Every channel count and grid size the network uses is derived from this one frozen object, so
ViT-S/B/L/G and any input size that is a multiple of the patch size work without code changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from selavpr_ros.errors import ConfigError

PATCH_SIZE = 14
# DINOv2 checkpoints are trained at 518x518, so pos_embed holds 1 + 37*37 positions.
POS_EMBED_GRID = 37
NUM_REGISTER_TOKENS = 4
ADAPTER_RATIO = 0.5
LOCAL_HIDDEN_DIM = 256
LOCAL_DIM = 128


@dataclass(frozen=True)
class BackboneSpec:
    """Shape of one DINOv2 ViT: what the released weights fix and cannot be inferred from them."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn: Literal["mlp", "swiglu"]


BACKBONES: dict[str, BackboneSpec] = {
    "vits14": BackboneSpec(384, 12, 6, "mlp"),
    "vitb14": BackboneSpec(768, 12, 12, "mlp"),
    "vitl14": BackboneSpec(1024, 24, 16, "mlp"),
    "vitg14": BackboneSpec(1536, 40, 24, "swiglu"),
}


def _as_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, bool):
        raise ConfigError(f"image_size must be an int or (height, width), got {size!r}")
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in size
    ):
        return (int(size[0]), int(size[1]))
    raise ConfigError(f"image_size must be an int or (height, width), got {size!r}")


@dataclass(frozen=True)
class SelaVPRConfig:
    """What defines a SelaVPR network; the defaults are the published model (ViT-L/14, 224x224).

    Attributes:
        backbone: one of ``BACKBONES`` (``vits14``, ``vitb14``, ``vitl14``, ``vitg14``).
        depth: number of transformer blocks; ``None`` keeps the backbone's own depth. Small
            depths exist for tests and must match the checkpoint when loading one.
        registers: DINOv2 with 4 register tokens (the reference's ``--registers``).
        image_size: network input, an int (square) or (height, width), multiples of 14.
    """

    backbone: str = "vitl14"
    depth: int | None = None
    registers: bool = False
    image_size: int | tuple[int, int] = 224

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"unknown backbone {self.backbone!r}; expected one of {sorted(BACKBONES)}"
            )
        if self.depth is not None and (
            not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 1
        ):
            raise ConfigError(f"depth must be a positive int or None, got {self.depth!r}")
        if not isinstance(self.registers, bool):
            raise ConfigError(f"registers must be a bool, got {self.registers!r}")
        hw = _as_hw(self.image_size)
        for side in hw:
            if side < PATCH_SIZE or side % PATCH_SIZE:
                raise ConfigError(
                    f"image_size {self.image_size!r}: each side must be a positive multiple "
                    f"of the patch size {PATCH_SIZE}"
                )
        # Keep a hashable, canonical form: lists from JSON become tuples.
        if not isinstance(self.image_size, int):
            object.__setattr__(self, "image_size", hw)

    @property
    def spec(self) -> BackboneSpec:
        return BACKBONES[self.backbone]

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def num_heads(self) -> int:
        return self.spec.num_heads

    @property
    def num_layers(self) -> int:
        return self.spec.depth if self.depth is None else self.depth

    @property
    def ffn(self) -> str:
        return self.spec.ffn

    @property
    def adapter_dim(self) -> int:
        return int(self.embed_dim * ADAPTER_RATIO)

    @property
    def patch_size(self) -> int:
        return PATCH_SIZE

    @property
    def num_register_tokens(self) -> int:
        return NUM_REGISTER_TOKENS if self.registers else 0

    @property
    def input_hw(self) -> tuple[int, int]:
        return _as_hw(self.image_size)

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Patch-token grid for ``image_size`` (16x16 at 224)."""
        h, w = self.input_hw
        return (h // PATCH_SIZE, w // PATCH_SIZE)

    @property
    def local_hw(self) -> tuple[int, int]:
        """Local-feature grid: two stride-2 transposed convs map g to 4g-3 (61 at g=16)."""
        return local_grid(self.grid_hw)

    @property
    def local_dim(self) -> int:
        return LOCAL_DIM

    @property
    def global_dim(self) -> int:
        return self.embed_dim

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (stored in safetensors metadata)."""
        data = asdict(self)
        if isinstance(self.image_size, tuple):
            data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelaVPRConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown SelaVPRConfig keys {unknown}; expected {sorted(known)}")
        return cls(**data)


def local_grid(grid_hw: tuple[int, int]) -> tuple[int, int]:
    """Output grid of LocalAdapt for a patch grid: (g-1)*2+1 twice, i.e. 4g-3."""
    return (4 * grid_hw[0] - 3, 4 * grid_hw[1] - 3)
