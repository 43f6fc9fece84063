r"""OpenAI guided-diffusion (ADM) and consistency-model checkpoints as diffusers ``UNet2DModel`` priors.

:func:`openai_unet_config` turns guided-diffusion's ``create_model`` arguments into a ``UNet2DModel`` config
(peers.md 2.4: resnet up/down-sampling blocks, scale-shift norm, ``attn_norm_num_groups=32``, [cos, sin] time
embedding); :func:`openai_key_pairs` lists which OpenAI module becomes which diffusers module, following the
order in which guided-diffusion builds ``input_blocks`` / ``middle_block`` / ``output_blocks``; and
:func:`convert_openai_state_dict` renames the tensors and splits each attention ``qkv`` 1x1 convolution into
``to_q`` / ``to_k`` / ``to_v``:

* ``qkv_layout="legacy"`` (guided-diffusion ``QKVAttentionLegacy``, ``use_new_attention_order=False``; the
  FFHQ and ImageNet ADM checkpoints): output channels are **head-major**, ``(heads, 3, d)``;
* ``qkv_layout="chunk"`` (``use_new_attention_order=True`` and the consistency-model checkpoints' flash layout):
  ``(3, heads, d)``, a plain chunk into three.

Both load without error in the wrong layout and then produce garbage, so the layout is part of each config.
A converted network is saved once as safetensors under ``cache_dir()/converted`` and loaded directly next time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zsir.priors.diffusers import load_unet
from zsir.priors.diffusion import DiscreteVPPrior, ddpm_linear_alphas_cumprod, unet_multiple
from zsir.priors.hub import cache_dir, check_state_dict, read_state_dict, url_file

__all__ = [
    "ADMPrior",
    "OPENAI_CONFIGS",
    "openai_unet_config",
    "openai_key_pairs",
    "convert_openai_state_dict",
    "split_qkv",
    "load_openai_unet",
]


def openai_unet_config(
    *,
    image_size: int,
    num_channels: int,
    channel_mult: tuple[int, ...],
    num_res_blocks: int,
    attention_resolutions: tuple[int, ...],
    learn_sigma: bool = True,
    use_scale_shift_norm: bool = True,
    num_head_channels: int = 64,
    num_classes: int | None = None,
    in_channels: int = 3,
) -> dict[str, Any]:
    """``UNet2DModel`` config equivalent to guided-diffusion's ``create_model`` with ``resblock_updown=True``.

    ``attention_resolutions`` are feature-map sizes (e.g. ``(32, 16, 8)``), as in guided-diffusion.
    """
    attn = [image_size // 2**i in attention_resolutions for i in range(len(channel_mult))]
    down = tuple("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attn))
    return {
        "sample_size": image_size,
        "in_channels": in_channels,
        "out_channels": in_channels * (2 if learn_sigma else 1),
        "block_out_channels": tuple(num_channels * m for m in channel_mult),
        "layers_per_block": num_res_blocks,
        "down_block_types": down,
        "up_block_types": up,
        "downsample_type": "resnet",
        "upsample_type": "resnet",
        "resnet_time_scale_shift": "scale_shift" if use_scale_shift_norm else "default",
        "attention_head_dim": num_head_channels,
        "attn_norm_num_groups": 32,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "num_class_embeds": num_classes,
    }


#: Named configs: guided-diffusion arguments (rdmd.md 3.2, cm4ir.md 3.2) and the checkpoint's QKV layout.
OPENAI_CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "ffhq256": (
        openai_unet_config(
            image_size=256, num_channels=128, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=1,
            attention_resolutions=(16,),
        ),
        "legacy",
    ),
    "imagenet256": (
        openai_unet_config(
            image_size=256, num_channels=256, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
            attention_resolutions=(32, 16, 8),
        ),
        "legacy",
    ),
    "cm_lsun256": (
        openai_unet_config(
            image_size=256, num_channels=256, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
            attention_resolutions=(32, 16, 8), learn_sigma=False, use_scale_shift_norm=False,
        ),
        "chunk",
    ),
    "cm_imagenet64": (
        openai_unet_config(
            image_size=64, num_channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
            attention_resolutions=(32, 16, 8), learn_sigma=False, num_classes=1000,
        ),
        "chunk",
    ),
}  # fmt: skip

_RES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_ATTN = {"norm": "group_norm", "proj_out": "to_out.0"}


def _get(config: Mapping[str, Any] | Any, key: str, default=None):
    return config.get(key, default) if isinstance(config, Mapping) else getattr(config, key, default)


def openai_key_pairs(config: Mapping[str, Any] | Any) -> list[tuple[str, str, str]]:
    """``(openai_prefix, diffusers_prefix, kind)`` for every module, kind in ``"plain"``, ``"res"``, ``"attn"``.

    ``config`` is a ``UNet2DModel`` config (dict or ``model.config``). The OpenAI indices follow guided-diffusion:
    ``input_blocks.0`` is the input conv; each level has ``layers_per_block`` (ResBlock[, attention]) blocks and,
    except the last level, a down-sampling ResBlock; each output level has ``layers_per_block + 1`` blocks, the
    last one ending with an up-sampling ResBlock (at index 1, or 2 after an attention block) except at level 0.
    """
    levels = len(_get(config, "block_out_channels"))
    n = _get(config, "layers_per_block")
    attn = ["Attn" in t for t in _get(config, "down_block_types")]
    pairs = [
        ("time_embed.0", "time_embedding.linear_1", "plain"),
        ("time_embed.2", "time_embedding.linear_2", "plain"),
        ("input_blocks.0.0", "conv_in", "plain"),
    ]
    if _get(config, "num_class_embeds"):
        pairs.append(("label_emb", "class_embedding", "plain"))
    k = 1
    for i in range(levels):
        for j in range(n):
            pairs.append((f"input_blocks.{k}.0", f"down_blocks.{i}.resnets.{j}", "res"))
            if attn[i]:
                pairs.append((f"input_blocks.{k}.1", f"down_blocks.{i}.attentions.{j}", "attn"))
            k += 1
        if i < levels - 1:
            pairs.append((f"input_blocks.{k}.0", f"down_blocks.{i}.downsamplers.0", "res"))
            k += 1
    pairs += [
        ("middle_block.0", "mid_block.resnets.0", "res"),
        ("middle_block.1", "mid_block.attentions.0", "attn"),
        ("middle_block.2", "mid_block.resnets.1", "res"),
    ]
    k = 0
    for u, i in enumerate(reversed(range(levels))):
        for j in range(n + 1):
            pairs.append((f"output_blocks.{k}.0", f"up_blocks.{u}.resnets.{j}", "res"))
            if attn[i]:
                pairs.append((f"output_blocks.{k}.1", f"up_blocks.{u}.attentions.{j}", "attn"))
            if i > 0 and j == n:
                pairs.append((f"output_blocks.{k}.{2 if attn[i] else 1}", f"up_blocks.{u}.upsamplers.0", "res"))
            k += 1
    pairs += [("out.0", "conv_norm_out", "plain"), ("out.2", "conv_out", "plain")]
    return pairs


def split_qkv(t: Tensor, heads: int, layout: str) -> tuple[Tensor, Tensor, Tensor]:
    """Split a ``qkv`` weight ``(3C, C[, 1])`` or bias ``(3C,)`` into q, k, v (``(C, C)`` / ``(C,)``).

    ``layout="legacy"``: channels ordered ``(heads, 3, d)``; ``"chunk"``: ``(3, heads, d)``.
    """
    three_c = t.shape[0]
    c, rest = three_c // 3, t.shape[1:2]
    if layout == "legacy":
        parts = t.reshape(heads, 3, c // heads, *rest).unbind(1)
    elif layout == "chunk":
        parts = t.reshape(3, c, *rest).unbind(0)
    else:
        raise ValueError(f"qkv_layout: expected 'legacy' or 'chunk', got {layout!r}")
    return tuple(p.reshape(c, *rest) for p in parts)


def convert_openai_state_dict(
    state: Mapping[str, Tensor], config: Mapping[str, Any] | Any, qkv_layout: str = "legacy"
) -> dict[str, Tensor]:
    """Rename an OpenAI (guided-diffusion / consistency-models) state dict to ``UNet2DModel`` keys.

    Attention ``qkv`` / ``proj_out`` 1x1 convolutions become linear layers (trailing 1 dropped) and ``qkv`` is
    split with :func:`split_qkv`. Keys the config does not account for are kept under their OpenAI names so
    that :func:`zsir.priors.hub.check_state_dict` reports them as unexpected.
    """
    head_dim = _get(config, "attention_head_dim") or 64
    out: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(src: str, dst: str, squeeze: bool = False) -> None:
        for p in ("weight", "bias"):
            if f"{src}.{p}" in state:
                t = state[f"{src}.{p}"]
                out[f"{dst}.{p}"] = t.reshape(t.shape[:2]) if squeeze and t.dim() == 3 else t
                used.add(f"{src}.{p}")

    for src, dst, kind in openai_key_pairs(config):
        if kind == "plain":
            take(src, dst)
        elif kind == "res":
            for a, b in _RES.items():
                take(f"{src}.{a}", f"{dst}.{b}")
        else:
            take(f"{src}.norm", f"{dst}.group_norm")
            take(f"{src}.proj_out", f"{dst}.to_out.0", squeeze=True)
            for p in ("weight", "bias"):
                key = f"{src}.qkv.{p}"
                if key in state:
                    heads = max(state[key].shape[0] // 3 // head_dim, 1)
                    q, k, v = split_qkv(state[key], heads, qkv_layout)
                    out.update({f"{dst}.to_q.{p}": q, f"{dst}.to_k.{p}": k, f"{dst}.to_v.{p}": v})
                    used.add(key)
    out.update({k: v for k, v in state.items() if k not in used})
    return out


def _resolve_config(config: str | Mapping[str, Any], qkv_layout: str | None) -> tuple[dict, str, str]:
    if isinstance(config, str):
        if config not in OPENAI_CONFIGS:
            raise ValueError(
                f"config: expected one of {sorted(OPENAI_CONFIGS)} or a UNet2DModel config dict, got {config!r}"
            )
        cfg, layout = OPENAI_CONFIGS[config]
        return dict(cfg), qkv_layout or layout, config
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a name or a dict, got {type(config).__name__}")
    blob = json.dumps(dict(config), sort_keys=True, default=list).encode()
    return dict(config), qkv_layout or "legacy", "cfg" + hashlib.sha256(blob).hexdigest()[:10]


def _fingerprint(path: Path) -> str:
    """Cheap content fingerprint: size plus the first and last MiB."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(path.stat().st_size - (1 << 20), 0))
        h.update(f.read())
    return h.hexdigest()[:16]


def load_openai_unet(
    path: str | Path, config: str | Mapping[str, Any] = "ffhq256", *, qkv_layout: str | None = None, cache: bool = True
) -> nn.Module:
    """Load an OpenAI-layout checkpoint (``.pt`` or ``.safetensors``) into a diffusers ``UNet2DModel``.

    A file already in diffusers layout (``conv_in.weight`` present) is loaded without renaming. The converted
    network is saved (safetensors) to ``cache_dir()/converted/<stem>-<config>-<fingerprint>`` and loaded from
    there next time (``cache=False`` skips both).

    Raises:
        zsir.priors.hub.CheckpointError: the file is corrupt, or its keys / shapes do not fit ``config``.
    """
    from diffusers import UNet2DModel

    path = Path(path)
    cfg, layout, tag = _resolve_config(config, qkv_layout)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    target = cache_dir() / "converted" / f"{path.stem}-{tag}-{layout}-{_fingerprint(path)}"
    if cache and (target / "config.json").is_file():
        return load_unet(target)
    state = read_state_dict(path)
    if "conv_in.weight" not in state:
        state = convert_openai_state_dict(state, cfg, layout)
    with torch.device("meta"):
        unet = UNet2DModel(**cfg)
    check_state_dict(state, unet, str(path))
    unet.load_state_dict(state, assign=True)
    if cache:
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        unet.save_pretrained(str(tmp), safe_serialization=True)
        shutil.rmtree(target, ignore_errors=True)
        tmp.replace(target)
    return unet


class ADMPrior(DiscreteVPPrior):
    """Guided-diffusion (ADM) epsilon network as a VE denoiser (see :class:`DiscreteVPPrior`).

    The network outputs 6 channels (epsilon and the learned-variance interpolation); the first 3 are used.
    Schedule: linear betas 1e-4..0.02, 1000 steps, float64
    (:func:`~zsir.priors.diffusion.ddpm_linear_alphas_cumprod`).
    """

    @classmethod
    def from_openai(
        cls,
        path_or_url: str | Path,
        config: str | Mapping[str, Any] = "ffhq256",
        *,
        qkv_layout: str | None = None,
        cache: bool = True,
        clip: bool = True,
        name: str | None = None,
    ) -> ADMPrior:
        """Load an OpenAI ADM checkpoint (path or ``https://`` URL, downloaded once) with config
        ``"ffhq256"`` (``ffhq_10m.pt``), ``"imagenet256"`` (``256x256_diffusion_uncond.pt``) or a
        ``UNet2DModel`` config dict (see :func:`openai_unet_config`)."""
        s = str(path_or_url)
        path = url_file(s) if s.startswith(("http://", "https://")) else Path(s)
        unet = load_openai_unet(path, config, qkv_layout=qkv_layout, cache=cache)
        size = unet.config.sample_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        return cls(
            unet,
            ddpm_linear_alphas_cumprod(dtype=np.float64),
            "epsilon",
            clip=clip,
            channels=unet.config.in_channels,
            multiple=unet_multiple(unet),
            train_size=size,
            name=name or f"adm:{Path(path).stem}",
        )
