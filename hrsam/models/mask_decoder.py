"""SAM's mask decoder (HRSAM spec A.13), with SAM's parameter names.

The interactive protocol uses the single-mask output (mask token 0) and feeds its raw logits back
as the next dense prompt; ``multimask=True`` returns tokens 1-3 as SAM does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrsam.models.common import LayerNorm2d
from hrsam.models.transformer import TwoWayTransformer


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (SAM's hypernetwork / IoU head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: nn.Module | None = None,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer or TwoWayTransformer(embedding_dim=transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, 2, 2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, 2, 2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )
        self.detail_fuse: nn.Module | None = None  # hrsam.models.detail.add_detail
        self.detail_refine: nn.Module | None = None  # hrsam.models.detail.add_refine

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        detail: Tensor | None = None,
        half: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Logits (B, 1 or 3, 4H, 4W) and IoU predictions (B, 1 or 3). ``detail``: the image's
        (1 or B, D, 4H, 4W) features for ``detail_fuse``; ``half``: its (1 or B, D, 8H, 8W)
        features for ``detail_refine``, whose logits are (B, 1 or 3, 8H, 8W)
        (`hrsam.models.detail`)."""
        masks, iou = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, detail
        )
        sl = slice(1, None) if multimask_output else slice(0, 1)
        masks = masks[:, sl]
        if self.detail_refine is not None:  # the returned masks only: it runs at T/2
            if half is None:
                raise ValueError(
                    "this decoder has a refine path (detail_refine): pass the image's T/2 "
                    "features (InteractiveSegmenter.decode unpacks them from the embedding)"
                )
            masks = self.detail_refine(masks, half)
        return masks, iou[:, sl]

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse: Tensor,
        dense: Tensor,
        detail: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], 0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], 1)
        src = image_embeddings
        if src.shape[0] != b:
            src = torch.repeat_interleave(src, b, 0)
        src = src + dense
        pos = torch.repeat_interleave(image_pe, b, 0) if image_pe.shape[0] != b else image_pe
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_out, mask_out = hs[:, 0], hs[:, 1 : 1 + self.num_mask_tokens]
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        if self.detail_fuse is not None:
            if detail is None:
                raise ValueError(
                    "this decoder has a detail path (detail_fuse): pass the image's detail "
                    "features (InteractiveSegmenter.decode unpacks them from the embedding)"
                )
            if detail.shape[0] != b:
                detail = detail.expand(b, -1, -1, -1)
            up = up + self.detail_fuse(up, detail)
        hyper = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1
        )
        bu, cu, hu, wu = up.shape
        masks = (hyper @ up.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
        return masks, self.iou_prediction_head(iou_out)
