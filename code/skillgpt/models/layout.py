"""How an encoder's visual tokens are arranged, so projectors can pool, resample or fuse them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLayout:
    """`views` camera views (view-major), each of `groups` groups in time order (clips or frames),
    each group made of `prefix` non-spatial tokens (e.g. a class token) followed by a `grid` x `grid`
    patch grid in row-major order (grid 0: none).

    Spatial crops (``data.video.num_crops``) are folded by the encoder: outputs that average them
    (ImageBind ``pooled``, ``clip_embeddings``) have one group per clip; token outputs give every crop
    its own groups, clip-major with a clip's crops in crop order (left/centre/right), so a group is
    always one crop's patch grid and the projectors need not know about crops.

    A media item's encoder output [B, N, D] has N = views * groups * (prefix + grid**2).
    """

    groups: int
    prefix: int
    grid: int
    views: int = 1

    @property
    def per_group(self) -> int:
        return self.prefix + self.grid * self.grid

    @property
    def per_view(self) -> int:
        return self.groups * self.per_group

    @property
    def num_tokens(self) -> int:
        return self.views * self.per_view
