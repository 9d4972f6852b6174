"""What medattn registers out of the box: the paper's backbones and attention, and more.

Backbones: the paper's ResNet18 and EfficientNet-B0 and its two ViT-tiny baselines; ResNet50 and
DenseNet121 (the two CNNs most used in medical imaging papers) and EfficientNet-B3. Attention:
the paper's GA, LA and ELA; timm's squeeze-and-excitation, CBAM and ECA gates; BoTNet's
multi-head self-attention. Factories import torch only when a model is built.

Where attention goes (``after`` / ``local`` paths) follows the paper on its two backbones and the
same logic on the others: ``after`` = the outputs of the first two stages, ``local`` = the 3x3
convs (or final MBConv blocks) of the last stage, which is what BoTNet replaces with MHSA.
"""

from __future__ import annotations

from medattn.errors import ConfigError
from functools import partial

from medattn.models import registry
from medattn.models.registry import Site, register_attention

# the paths of these entries are tested (tests/test_models_registry.py); checking them here would
# import timm with medattn
register_backbone = partial(registry.register_backbone, check=False)


# --------------------------------------------------------------------------------- attention
# The factories import the modules they build when called: the registry imports this module on
# its first lookup, and a label lookup (report, compare) must not import torch or timm.

def _ga(site: Site):
    from medattn.models.attention import GlobalAttention2d

    return GlobalAttention2d(site.out_channels, subsample=site.options["ga_subsample"])


def _la(site: Site):
    from medattn.models.attention import LocalAttention2d

    heads = site.options["heads"]
    if site.out_channels % heads:
        raise ConfigError(f"model option heads={heads} must divide the channels of every local-"
                          f"attention site; {site.path} has {site.out_channels} (e.g. heads=1, 2 or 4)")
    return LocalAttention2d(site.in_channels, site.out_channels, kernel_size=site.options["kernel_size"],
                            stride=site.stride, heads=heads, tile=site.options["la_tile"])


def _timm_gate(kind: str):
    def factory(site: Site):
        from timm.layers import create_attn

        return create_attn(kind, site.out_channels)
    factory.__name__ = f"timm_{kind}"
    return factory


def _mhsa(site: Site):
    from medattn.models.timm_layers import MultiHeadSelfAttention2d

    heads = site.options["mhsa_heads"]
    if site.out_channels % heads:
        raise ConfigError(f"model option mhsa_heads={heads} must divide the channels of every "
                          f"MHSA site; {site.path} has {site.out_channels} (e.g. mhsa_heads=1, 2 or 4)")
    if site.stride not in (1, 2):
        raise ConfigError(f"MHSA replaces layers of stride 1 or 2; {site.path} has stride {site.stride}")
    return MultiHeadSelfAttention2d(site.in_channels, site.out_channels, site.feat_size,
                                    stride=site.stride, num_heads=heads)


register_attention("ga", _ga, "after", label="GA", abbrev="G", order=10, rezero=False,
                   identity_at_init=True, paper=True,
                   description="global self-attention (non-local blocks)", short="global attention")
register_attention("la", _la, "replace", label="LA", abbrev="L", order=20, paper=True,
                   description="local self-attention", short="local attention",
                   note="replaces pretrained convs/blocks: their weights are gone")
register_attention("ela", _la, "embed", label="ELA", abbrev="E", order=30, paper=True,
                   description="embedded local self-attention", short="embedded local attention")
register_attention("se", _timm_gate("se"), "after", label="SE", order=40,
                   description="squeeze-and-excitation (timm SEModule, zero-init residual scale)",
                   short="squeeze-and-excitation")
register_attention("cbam", _timm_gate("cbam"), "after", label="CBAM", order=50,
                   description="CBAM channel and spatial attention (timm CbamModule, zero-init "
                   "residual scale)", short="CBAM")
register_attention("eca", _timm_gate("eca"), "after", label="ECA", order=60,
                   description="efficient channel attention (timm EcaModule, zero-init residual "
                   "scale)", short="ECA")
register_attention("mhsa", _mhsa, "replace", label="MHSA", order=70,
                   description="BoTNet multi-head self-attention (timm BottleneckAttn)",
                   short="multi-head self-attention",
                   note="replaces pretrained convs/blocks: their weights are gone")


# --------------------------------------------------------------------------------- backbones

# ResNet18: the torchvision weights, the ImageNet ResNet18 of the paper's time; EfficientNet-B0:
# timm's default. ResNet50 and DenseNet121: torchvision's too, as in most medical imaging work.
register_backbone("resnet18", "resnet18.tv_in1k", after=("layer1", "layer2"),
                  local=("layer4.*.conv1", "layer4.*.conv2"), gradcam=("layer4.1",),
                  label="ResNet18", order=10, local_text="the 3x3 convs of layer4",
                  description="ResNet18 baseline (timm)", timm_options=("zero_init_last",), paper=True)
register_backbone("efficientnet_b0", "efficientnet_b0.ra_in1k", after=("blocks.1", "blocks.2"),
                  local=("blocks.6.0",), gradcam=("bn2",), label="EfficientNet-B0",
                  short_label="EffNet-B0", order=20, after_text="after blocks[1] and blocks[2]",
                  local_text="the last MBConv block (blocks[6])",
                  description="EfficientNet-B0 baseline (timm)", paper=True)
# ViT-Ti/16 (embed 192, depth 12, 3 heads). 1k: DeiT-Ti is the ViT-Ti architecture trained on
# ImageNet-1k only (timm has no plain-ViT ImageNet-1k-only Ti weights). 21k: the AugReg ViT-Ti
# pre-trained on ImageNet-21k only (not the in1k fine-tuned one), so the two differ in pre-training data.
_VIT = dict(kind="vit", label="ViT-tiny", group="vit", paper=True,
            timm_kwargs={"dynamic_img_size": True, "dynamic_img_pad": True})
register_backbone("vit_tiny_in1k", "deit_tiny_patch16_224.fb_in1k", order=30, variant="1k",
                  variant_label="ViT-1k", description="ViT-tiny/16 pre-trained on ImageNet-1k "
                  "(timm deit_tiny_patch16_224.fb_in1k)", **_VIT)
register_backbone("vit_tiny_in21k", "vit_tiny_patch16_224.augreg_in21k", order=31, variant="21k",
                  variant_label="ViT-21k", description="ViT-tiny/16 pre-trained on ImageNet-21k "
                  "(timm vit_tiny_patch16_224.augreg_in21k)", **_VIT)
# The demo's ViT baseline: ViT-Ti with 8 px patches, sized for 48 px images (6 x 6 tokens; a /16
# patch leaves 3 x 3) and trained from scratch there: on 2 CPU cores it costs about twice a
# ResNet18 run. dynamic_img_size keeps other image sizes working (the position embedding is
# interpolated). Not one of the paper's models.
register_backbone("vit_tiny_p8", "vit_tiny_patch16_224", order=32, variant="p8",
                  variant_label="ViT-p8", kind="vit", label="ViT-tiny", group="vit",
                  description="ViT-tiny with 8 px patches for 48 px images, from scratch (the "
                  "demo's ViT baseline; timm vit_tiny_patch16_224 with patch_size=8, img_size=48)",
                  timm_kwargs={"patch_size": 8, "img_size": 48, "dynamic_img_size": True,
                               "dynamic_img_pad": True})
register_backbone("resnet50", "resnet50.tv_in1k", after=("layer1", "layer2"),
                  local=("layer4.*.conv2",), gradcam=("layer4.2",), label="ResNet50", order=40,
                  local_text="the 3x3 convs of layer4", timm_options=("zero_init_last",))
register_backbone("densenet121", "densenet121.tv_in1k",
                  after=("features.transition1", "features.transition2"),
                  local=("features.denseblock4.*.conv2",), gradcam=("features.norm5",),
                  label="DenseNet121", order=50, after_text="after transition1 and transition2",
                  local_text="the 3x3 convs of denseblock4")
register_backbone("efficientnet_b3", "efficientnet_b3.ra2_in1k", after=("blocks.1", "blocks.2"),
                  local=("blocks.6.*",), gradcam=("bn2",), label="EfficientNet-B3",
                  short_label="EffNet-B3", order=60, after_text="after blocks[1] and blocks[2]",
                  local_text="the last MBConv stage (blocks[6])")
