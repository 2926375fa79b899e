"""Converters for checkpoints the family modules do not cover: timm's own names for models that
torchvision also has, and Hugging Face transformers' image classifiers (`hf`).

Hugging Face checkpoints on the Hub use the names of transformers 4 (`attention.attention.query`,
`intermediate.dense`); transformers 5 renames them in memory (`attention.q_proj`, `mlp.fc1`).
Both spellings are read. Separate query, key and value projections are concatenated into our
fused `qkv` in that order.
"""

from __future__ import annotations

import re

import torch

from visionzoo.convert import Rule, StateDict, get_converter, register_converter, rename_keys
from visionzoo.errors import UserError
from visionzoo.models.vit import _from_timm as _vit_from_timm

# timm's ResNet keeps torchvision's names (conv1, bn1, layerN, downsample, fc).
register_converter("timm", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")(
    lambda state_dict: get_converter("resnet50", "torchvision")(state_dict)
)
# timm's ViT-B/L/H (vit_base_patch16_224, ...) have the layout of its DeiT models.
register_converter("timm", "vit_b_*", "vit_l_*", "vit_h_*")(_vit_from_timm)


@register_converter("timm", "swin_*")
def _swin_from_timm(state_dict: StateDict) -> StateDict:
    """timm's layers.i (patch merging first, as ours) -> stages.i; head.fc -> classifier."""
    state = {
        k: v
        for k, v in state_dict.items()
        if not k.endswith(("relative_position_index", "attn_mask"))
    }
    return rename_keys(state, [(r"^layers\.", "stages."), (r"^head\.fc\.", "classifier.")])


_TIMM_EFFICIENTNET_BLOCK = {  # timm's block tensors -> ours, for blocks with / without expansion
    True: {"conv_pw": "expand.conv", "bn1": "expand.norm", "conv_dw": "dw.conv", "bn2": "dw.norm",
           "conv_pwl": "project.conv", "bn3": "project.norm"},
    False: {"conv_dw": "dw.conv", "bn1": "dw.norm", "conv_pw": "project.conv",
            "bn2": "project.norm"},
}  # fmt: skip


@register_converter("timm", "efficientnet_b*")
def _efficientnet_from_timm(state_dict: StateDict) -> StateDict:
    """timm's conv_stem/bn1, blocks.S.J.{conv_pw,conv_dw,se,conv_pwl}, conv_head/bn2 -> ours."""
    expands = {
        m.group(1) for k in state_dict if (m := re.match(r"^blocks\.(\d+)\.\d+\.conv_pwl\.", k))
    }
    top = {"conv_stem": "stem.conv", "bn1": "stem.norm", "conv_head": "conv_head.conv",
           "bn2": "conv_head.norm", "classifier": "classifier"}  # fmt: skip
    out: StateDict = {}
    for key, value in state_dict.items():
        block = re.match(r"^blocks\.(\d+)\.(\d+)\.(\w+)\.(.+)$", key)
        if block:
            stage, index, layer, rest = block.groups()
            table = _TIMM_EFFICIENTNET_BLOCK[stage in expands]
            if layer == "se":
                rest = rest.replace("conv_reduce", "fc1").replace("conv_expand", "fc2")
                key = f"stages.{stage}.{index}.se.{rest}"
            else:
                key = f"stages.{stage}.{index}.{table.get(layer, layer)}.{rest}"
        else:
            head, _, rest = key.partition(".")
            key = f"{top.get(head, head)}.{rest}"
        out[key] = value
    return out


def fuse_qkv(state_dict: StateDict, pattern: str) -> StateDict:
    """Concatenate `<prefix>{q,k,v}.{weight,bias}` (regex group 1 = prefix) into `<prefix>qkv.`."""
    out: StateDict = {}
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        m = re.match(pattern + r"(q|k|v)\.(weight|bias)$", key)
        if m:
            groups.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
        else:
            out[key] = value
    for (prefix, kind), parts in groups.items():
        out[f"{prefix}qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


# transformers 4 names (the Hub's files) -> transformers 5 names, then one mapping from those.
_HF_V4_NAMES: list[Rule] = [
    (r"\.encoder\.layer\.(\d+)\.", r".layers.\1."),
    (r"\.attention\.(?:attention|self)\.(query|key|value)\.",
     lambda m: f".attention.{m[1][0]}_proj."),
    (r"\.attention\.self\.relative_position_bias_table$",
     ".attention.relative_position_bias.relative_position_bias_table"),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]  # fmt: skip


def _hf_v5(state_dict: StateDict) -> StateDict:
    state = {k: v for k, v in state_dict.items() if not k.endswith("relative_position_index")}
    return rename_keys(state, _HF_V4_NAMES)


def _hf_attention(state: StateDict, block: str) -> StateDict:
    state = rename_keys(state, [(rf"^({block})\.attention\.([qkv])_proj\.", r"\1.attn.\2.")])
    state = fuse_qkv(state, r"^(.*\.attn\.)")
    return rename_keys(
        state,
        [
            (r"\.attention\.o_proj\.", ".attn.proj."),
            (r"\.layernorm_before\.", ".norm1."),
            (r"\.layernorm_after\.", ".norm2."),
        ],
    )


@register_converter("hf", "vit_b_*", "vit_l_*", "vit_h_*", "vit_tiny_*", "vit_small_*")
def _vit_from_hf(state_dict: StateDict) -> StateDict:
    """ViTForImageClassification (google/vit-*, and the non-distilled facebook/deit-*)."""
    state = _hf_v5(_refuse_distilled(state_dict))
    state = rename_keys(state, [(r"^vit\.layers\.(\d+)\.", r"blocks.\1.")])
    state = _hf_attention(state, r"blocks\.\d+")
    return rename_keys(
        state,
        [
            (r"^vit\.embeddings\.cls_token$", "cls_token"),
            (r"^vit\.embeddings\.position_embeddings$", "pos_embedding"),
            (r"^vit\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
            (r"^vit\.layernorm\.", "norm."),
        ],
    )


@register_converter("hf", "swin_*")
def _swin_from_hf(state_dict: StateDict) -> StateDict:
    """SwinForImageClassification: HF merges patches at the end of stage i, we at the start of
    stage i + 1."""
    state = _hf_v5(state_dict)
    state = rename_keys(
        state,
        [
            (r"^swin\.encoder\.layers\.(\d+)\.downsample\.",
             lambda m: f"stages.{int(m[1]) + 1}.downsample."),
            (r"^swin\.encoder\.layers\.(\d+)\.blocks\.", r"stages.\1.blocks."),
            (r"\.attention\.relative_position_bias\.relative_position_bias_table$",
             ".attn.relative_position_bias_table"),
        ],
    )  # fmt: skip
    state = _hf_attention(state, r"stages\.\d+\.blocks\.\d+")
    return rename_keys(
        state,
        [
            (r"^swin\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
            (r"^swin\.embeddings\.norm\.", "patch_embed.norm."),
            (r"^swin\.layernorm\.", "norm."),
        ],
    )


@register_converter("hf", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
def _resnet_from_hf(state_dict: StateDict) -> StateDict:
    """ResNetForImageClassification (microsoft/resnet-*): layer.K -> convK+1."""
    return rename_keys(
        state_dict,
        [
            (r"^resnet\.embedder\.embedder\.convolution\.", "stem.conv."),
            (r"^resnet\.embedder\.embedder\.normalization\.", "stem.norm."),
            (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.\2."),
            (r"\.shortcut\.convolution\.", ".shortcut.conv."),
            (r"\.shortcut\.normalization\.", ".shortcut.norm."),
            (r"\.layer\.(\d)\.convolution\.", lambda m: f".conv{int(m[1]) + 1}.conv."),
            (r"\.layer\.(\d)\.normalization\.", lambda m: f".conv{int(m[1]) + 1}.norm."),
            (r"^classifier\.1\.", "classifier."),
        ],
    )


@register_converter("hf", "convnext_*")
def _convnext_from_hf(state_dict: StateDict) -> StateDict:
    """ConvNextForImageClassification (facebook/convnext-*-224)."""
    return rename_keys(
        state_dict,
        [
            (r"^convnext\.embeddings\.patch_embeddings\.", "stem.0."),
            (r"^convnext\.layernorm\.", "head_norm."),
            (r"^convnext\.embeddings\.layernorm\.", "stem.1."),
            (r"^convnext\.encoder\.stages\.(\d+)\.downsampling_layer\.", r"stages.\1.downsample."),
            (r"^convnext\.encoder\.stages\.(\d+)\.layers\.", r"stages.\1.blocks."),
            (r"\.layer_scale_parameter$", ".layer_scale"),
            (r"\.dwconv\.", ".conv_dw."),
            (r"\.layernorm\.", ".norm."),
            (r"\.pwconv1\.", ".mlp.fc1."),
            (r"\.pwconv2\.", ".mlp.fc2."),
        ],
    )


def _refuse_distilled(state_dict: StateDict) -> StateDict:
    """transformers' DeiT classes (facebook/deit-*-distilled-*) carry a distillation token
    that every block attends to, and a second head: no ViT here has one."""
    if any(k.endswith("distillation_token") for k in state_dict):
        raise UserError(
            "a distilled DeiT (transformers' DeiTForImageClassification[WithTeacher]) has a "
            "distillation token and a second head, which visionzoo's ViTs do not: use the "
            "non-distilled weights, e.g. hf:facebook/deit-tiny-patch16-224"
        )
    return state_dict


def _stage_index(channels: list[int]) -> list[tuple[int, int]]:
    """(stage, index in stage) of each block, a new stage wherever the output width changes
    (true of MobileNet's and EfficientNet's tables: each stage opens with a new width)."""
    out, stage, index = [], -1, 0
    for i, c in enumerate(channels):
        stage, index = (stage + 1, 0) if i == 0 or c != channels[i - 1] else (stage, index + 1)
        out.append((stage, index))
    return out


@register_converter("hf", "mobilenet_v1*")
def _mobilenet_v1_from_hf(state_dict: StateDict) -> StateDict:
    """MobileNetV1ForImageClassification: layer.2b / layer.2b+1 are block b's depthwise and
    pointwise convs; read through timm's layout. Logits equal HF's for `tf_padding=False`;
    google/mobilenet_v1_* pad TF-style and have 1001 classes (`hf:` specs refuse them)."""
    convs = {
        int(m[1]): v
        for k, v in state_dict.items()
        if (m := re.fullmatch(r"mobilenet_v1\.layer\.(\d+)\.convolution\.weight", k))
    }
    widths = [convs[i].shape[0] for i in sorted(convs) if i % 2 == 1]  # pointwise outputs
    rules = [(r"^mobilenet_v1\.conv_stem\.convolution\.", "conv_stem."),
             (r"^mobilenet_v1\.conv_stem\.normalization\.", "bn1.")]  # fmt: skip
    for b, (s, j) in enumerate(_stage_index(widths)):
        rules += [
            (rf"^mobilenet_v1\.layer\.{2 * b}\.convolution\.", f"blocks.{s}.{j}.conv_dw."),
            (rf"^mobilenet_v1\.layer\.{2 * b}\.normalization\.", f"blocks.{s}.{j}.bn1."),
            (rf"^mobilenet_v1\.layer\.{2 * b + 1}\.convolution\.", f"blocks.{s}.{j}.conv_pw."),
            (rf"^mobilenet_v1\.layer\.{2 * b + 1}\.normalization\.", f"blocks.{s}.{j}.bn2."),
        ]
    return get_converter("mobilenet_v1", "timm")(rename_keys(state_dict, rules))


@register_converter("hf", "mobilenet_v2")
def _mobilenet_v2_from_hf(state_dict: StateDict) -> StateDict:
    """MobileNetV2ForImageClassification: the stem holds the first (t=1) inverted residual;
    read through torchvision's layout. Logits equal HF's for `tf_padding=False`;
    google/mobilenet_v2_* pad TF-style and have 1001 classes (`hf:` specs refuse them)."""
    conv = {"expand_1x1": "conv.0.0", "conv_3x3": "conv.1.0", "reduce_1x1": "conv.2"}
    norm = {"expand_1x1": "conv.0.1", "conv_3x3": "conv.1.1", "reduce_1x1": "conv.3"}
    rules: list[Rule] = [
        (r"^mobilenet_v2\.conv_stem\.first_conv\.convolution\.", "features.0.0."),
        (r"^mobilenet_v2\.conv_stem\.first_conv\.normalization\.", "features.0.1."),
        (r"^mobilenet_v2\.conv_stem\.conv_3x3\.convolution\.", "features.1.conv.0.0."),
        (r"^mobilenet_v2\.conv_stem\.conv_3x3\.normalization\.", "features.1.conv.0.1."),
        (r"^mobilenet_v2\.conv_stem\.reduce_1x1\.convolution\.", "features.1.conv.1."),
        (r"^mobilenet_v2\.conv_stem\.reduce_1x1\.normalization\.", "features.1.conv.2."),
        (r"^mobilenet_v2\.layer\.(\d+)\.(\w+)\.convolution\.",
         lambda m: f"features.{int(m[1]) + 2}.{conv[m[2]]}."),
        (r"^mobilenet_v2\.layer\.(\d+)\.(\w+)\.normalization\.",
         lambda m: f"features.{int(m[1]) + 2}.{norm[m[2]]}."),
        (r"^mobilenet_v2\.conv_1x1\.convolution\.", "features.18.0."),
        (r"^mobilenet_v2\.conv_1x1\.normalization\.", "features.18.1."),
        (r"^classifier\.", "classifier.1."),
    ]  # fmt: skip
    return get_converter("mobilenet_v2", "torchvision")(rename_keys(state_dict, rules))


_HF_EFFICIENTNET_BLOCK = {  # HF block tensors -> torchvision `block.K`, with / without expansion
    True: {"expansion.expand_conv": "0.0", "expansion.expand_bn": "0.1",
           "depthwise_conv.depthwise_conv": "1.0", "depthwise_conv.depthwise_norm": "1.1",
           "squeeze_excite.reduce": "2.fc1", "squeeze_excite.expand": "2.fc2",
           "projection.project_conv": "3.0", "projection.project_bn": "3.1"},
    False: {"depthwise_conv.depthwise_conv": "0.0", "depthwise_conv.depthwise_norm": "0.1",
            "squeeze_excite.reduce": "1.fc1", "squeeze_excite.expand": "1.fc2",
            "projection.project_conv": "2.0", "projection.project_bn": "2.1"},
}  # fmt: skip


@register_converter("hf", "efficientnet_b*")
def _efficientnet_from_hf(state_dict: StateDict) -> StateDict:
    """EfficientNetForImageClassification: flat encoder.blocks.N -> stages by output width;
    read through torchvision's layout. HF pads TF-style (stem (0, 1, 0, 1); stride-2 depthwise
    convs one pixel less before than after unless listed in `depthwise_padding`), we pad
    symmetrically as torchvision: logits are equal for a symmetric reference only, and `hf:`
    specs refuse google/efficientnet-*."""
    prefix = "efficientnet.encoder.blocks."
    projections = {
        int(m[1]): v
        for k, v in state_dict.items()
        if (
            m := re.fullmatch(
                r"efficientnet\.encoder\.blocks\.(\d+)\.projection\.project_conv\.weight", k
            )
        )
    }
    if not projections:  # not transformers' layout: leave it for the shape check to name
        return state_dict
    place = _stage_index([projections[n].shape[0] for n in sorted(projections)])
    out: StateDict = {}
    for key, value in state_dict.items():
        block = re.match(r"^efficientnet\.encoder\.blocks\.(\d+)\.(\w+\.\w+)\.(\w+)$", key)
        if block:
            n, layer, tensor = block.groups()
            s, j = place[int(n)]
            table = _HF_EFFICIENTNET_BLOCK[
                f"{prefix}{n}.expansion.expand_conv.weight" in state_dict
            ]
            key = f"features.{s + 1}.{j}.block.{table[layer]}.{tensor}"
        else:
            key = rename_keys({key: value}, [
                (r"^efficientnet\.embeddings\.convolution\.", "features.0.0."),
                (r"^efficientnet\.embeddings\.batchnorm\.", "features.0.1."),
                (r"^efficientnet\.encoder\.top_conv\.", f"features.{place[-1][0] + 2}.0."),
                (r"^efficientnet\.encoder\.top_bn\.", f"features.{place[-1][0] + 2}.1."),
                (r"^classifier\.", "classifier.1."),
            ]).popitem()[0]  # fmt: skip
        out[key] = value
    return get_converter("efficientnet_b0", "torchvision")(out)


def hf_config_refusal(repo: str, model_name: str, config: dict) -> str | None:
    """Why a Hugging Face checkpoint cannot give its own logits in `model_name`, or None."""
    kind = config.get("model_type", "")
    tf_padding = config.get("tf_padding", False) or kind == "efficientnet"
    if tf_padding and model_name.startswith(("mobilenet_v1", "mobilenet_v2", "efficientnet")):
        other = "timm:mobilenetv1_100" if model_name.startswith("mobilenet_v1") else "torchvision"
        return (
            f"hf:{repo} pads TF-style ('SAME': asymmetric at stride 2) and {model_name} pads "
            f"symmetrically as torchvision's, so its logits would differ: use --weights {other}"
        )
    return None
