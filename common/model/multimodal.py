"""The multimodal model M = {E, C, B}: encoders, connector, LoRA backbone."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from common.data.samples import ModalitySpec, SampleSet
from common.model.adapters import AdapterGate, add_adapters, freeze_all
from common.model.backbone import Backbone
from common.model.connector import Connector
from common.model.encoder_adapters import EncoderGroups, group_prefix
from common.model.encoders import build_encoder
from common.sections import LoraSettings, ModelSettings

TEXT_MAX_TOKENS = 32


@dataclass
class Batch:
    """One mini-batch on the model's device.

    Attributes
    ----------
    inputs : dict of str to torch.Tensor
        Held modality -> ``(B, *shape)`` floats, or ``(B, L)`` token ids for text.
    mask : torch.Tensor
        ``(B, M)`` bool presence, columns in the model's modality order.
    target_ids : torch.Tensor
        ``(B, T)`` target tokens + EOS, right-padded with ``-100``.
    ids, labels : numpy.ndarray
        ``(B,)`` sample ids and class labels.
    targets : list of str
        Target texts.
    """

    inputs: dict[str, torch.Tensor]
    mask: torch.Tensor
    target_ids: torch.Tensor
    ids: np.ndarray
    labels: np.ndarray
    targets: list[str]


class MultimodalLM(nn.Module):
    """Encoders for the held modalities, a connector and a dual-LoRA backbone.

    Parameters
    ----------
    specs : tuple of ModalitySpec
        All modalities of the dataset.
    held : tuple of str
        Modalities this model has encoders and heads for.
    encoder_kinds : dict of str to str
        Encoder name per held modality.
    fusion : str
        Fusion kind of the connector.
    cfg : ModelSettings
        Sizes of the connector.
    backbone : Backbone
        Causal LM and tokenizer (wrapped here with the LoRA adapters).
    lora : LoraSettings
        Adapter ranks and targets.
    prompt : str
        The task prompt that follows the soft tokens.
    shared_seed : int
        Seed of the connector parts every model of a run starts from alike.
    private_adapter : bool
        Give the backbone its own LoRA beside the shared one (the cloud model).
    gate : bool
        Mix the shared and the private adapter by a learned gate (a device under
        the paper's AMT, ``amt.variant = "gate"``; needs ``private_adapter``).
    encoder_rank : int
        Rank of the encoders' shared low-rank adapters (0 = none); with them, each
        encoder starts from its kind's common seeded weights
        (:mod:`common.model.encoder_adapters`).
    encoder_alpha : float
        Scale numerator of those adapters.
    """

    def __init__(
        self,
        specs: tuple[ModalitySpec, ...],
        held: tuple[str, ...],
        encoder_kinds: dict[str, str],
        fusion: str,
        cfg: ModelSettings,
        backbone: Backbone,
        lora: LoraSettings,
        prompt: str,
        shared_seed: int = 0,
        private_adapter: bool = False,
        gate: bool = False,
        encoder_rank: int = 0,
        encoder_alpha: float = 1.0,
    ) -> None:
        super().__init__()
        by_name = {s.name: s for s in specs}
        self.specs = tuple(by_name[m] for m in held)
        self.held = tuple(held)
        self.tokenizer = backbone.tokenizer
        self._target_cache: dict[str, list[int]] = {}  # target text -> its token ids
        self.encoder_kinds = dict(encoder_kinds)
        self.encoders = nn.ModuleDict()
        self.encoder_adapters = nn.ModuleDict()
        dims = (cfg.encoder_dim, len(self.tokenizer), self.tokenizer.pad_token_id)
        # How this run builds the encoders of every group (used with encoder_rank > 0).
        self.encoder_build = EncoderGroups(*dims, encoder_rank, encoder_alpha, shared_seed)
        for spec in self.specs:
            kind = encoder_kinds[spec.name]
            if encoder_rank == 0:  # a private encoder, drawn from the device's own seed
                self.encoders[spec.name] = build_encoder(spec, kind, *dims)
            else:
                enc, adapter = self.encoder_build.build(spec, kind)
                self.encoders[spec.name], self.encoder_adapters[spec.name] = enc, adapter
        self.connector = Connector(
            self.held,
            cfg.encoder_dim,
            cfg.embed_dim,
            cfg.fused_dim,
            fusion,
            cfg.soft_tokens,
            backbone.hidden_size,
            lora.rank,
            lora.alpha,
            shared_seed,
        )
        freeze_all(backbone.model)
        self.lm = add_adapters(backbone.model, lora, private=private_adapter)
        self.gate = AdapterGate().attach(self.lm) if gate else None
        # bf16 autocast for training and generation (set on CUDA by the factory).
        self.autocast = False
        tok = self.tokenizer
        self.register_buffer(
            "prompt_ids",
            torch.tensor(tok(tok.bos_token + prompt, add_special_tokens=False).input_ids),
            persistent=False,
        )

    @property
    def device(self) -> torch.device:
        return self.prompt_ids.device

    def precision(self) -> AbstractContextManager:
        """bf16 autocast on the model's device when :attr:`autocast` is set, else nothing."""
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ----------------------------------------------------------------- batching
    def make_batch(self, data: SampleSet, index: np.ndarray) -> Batch:
        """Collate ``data[index]`` for this model (held modalities only)."""
        tok, dev = self.tokenizer, self.device
        cols = [data.modality_names.index(m) for m in self.held]
        inputs: dict[str, torch.Tensor] = {}
        for s in self.specs:
            values = data.inputs[s.name][index]
            own_tokenizer = getattr(self.encoders[s.name], "tokenize", None)
            if s.kind == "text" and own_tokenizer is not None:  # e.g. MiniLM's WordPiece
                inputs[s.name] = own_tokenizer([str(v) for v in values]).to(dev)
            elif s.kind == "text":
                enc = tok(
                    [str(v) for v in values],
                    padding="max_length",
                    truncation=True,
                    max_length=TEXT_MAX_TOKENS,
                    add_special_tokens=False,
                    return_tensors="pt",
                )
                inputs[s.name] = enc.input_ids.to(dev)
            else:
                inputs[s.name] = torch.as_tensor(np.asarray(values, np.float32), device=dev)
        targets = [data.targets[i] for i in index]
        target_ids = self.target_ids(targets)
        return Batch(
            inputs=inputs,
            mask=torch.as_tensor(data.mask[index][:, cols], device=dev),
            target_ids=target_ids.to(dev),
            ids=data.ids[index],
            labels=data.labels[index],
            targets=targets,
        )

    def target_ids(self, targets: list[str]) -> torch.Tensor:
        """``(B, T)`` token ids of ``" " + target + eos``, padding as the tokenizer pads: -100.

        Each distinct target is tokenized once per model (answers repeat a few
        strings; tokenizing every batch afresh cost more than the optimiser step).
        """
        tok = self.tokenizer
        rows = []
        for t in targets:
            ids = self._target_cache.get(t)
            if ids is None:
                ids = tok(" " + t + tok.eos_token, add_special_tokens=False).input_ids
                self._target_cache[t] = ids
            rows.append(ids)
        width = max((len(r) for r in rows), default=0)
        out = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, ids in enumerate(rows):
            if tok.padding_side == "left":
                out[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            else:
                out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    # ------------------------------------------------------------------ forward
    def represent(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality embeddings and the fused representation.

        Returns
        -------
        e : torch.Tensor
            ``(B, M, embed_dim)``, not normalised; rows of absent modalities are
            computed from zero inputs and must be ignored through ``batch.mask``.
        z : torch.Tensor
            ``(B, fused_dim)``.
        """
        with self.precision():
            feats = {m: self.encode(m, batch.inputs[m]) for m in self.held}
            e = self.connector.embed(feats)
            z = self.connector.fuse(e, batch.mask)
        return e.float(), z.float()

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """One modality's features, ``(B, encoder_dim)``, through its adapter if it has one."""
        enc = self.encoders[modality]
        if modality in self.encoder_adapters:
            return self.encoder_adapters[modality](enc, x)
        return enc(x)

    def encoder_groups(self) -> dict[str, str]:
        """Modality -> key prefix of its encoder adapter's group (adapted encoders only)."""
        return {m: group_prefix(m, self.encoder_kinds[m]) for m in self.encoder_adapters}

    def _prefix(self, z: torch.Tensor) -> torch.Tensor:
        """``[soft K | prompt P]`` embeddings, ``(B, K + P, H)``."""
        emb = self.lm.get_input_embeddings()
        prompt = emb(self.prompt_ids).unsqueeze(0).expand(z.shape[0], -1, -1)
        return torch.cat([self.connector.prompt(z).to(prompt.dtype), prompt], 1)

    def target_logits(self, batch: Batch, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits at every target position (teacher forcing).

        Returns
        -------
        logits : torch.Tensor
            ``(B, T, V)``: row ``t`` predicts target token ``t``.
        mask : torch.Tensor
            ``(B, T)`` bool, True at real (not padded) target tokens.
        """
        prefix = self._prefix(z)
        tgt = batch.target_ids
        emb = self.lm.get_input_embeddings()(tgt.clamp(min=0))
        attn = torch.cat(
            [
                torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device),
                (tgt != -100).long(),
            ],
            1,
        )
        with self.precision():
            logits = self.lm(inputs_embeds=torch.cat([prefix, emb], 1), attention_mask=attn).logits
        return logits[:, prefix.shape[1] - 1 : -1].float(), tgt != -100

    def lm_loss(self, batch: Batch, z: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the target tokens given soft prompt and task prompt."""
        prefix = self._prefix(z)
        tgt = batch.target_ids
        emb = self.lm.get_input_embeddings()(tgt.clamp(min=0))
        embeds = torch.cat([prefix, emb], 1)
        attn = torch.cat(
            [
                torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device),
                (tgt != -100).long(),
            ],
            1,
        )
        labels = torch.cat(
            [torch.full(prefix.shape[:2], -100, dtype=torch.long, device=self.device), tgt], 1
        )
        with self.precision():
            loss = self.lm(inputs_embeds=embeds, attention_mask=attn, labels=labels).loss
        return loss.float()

    @torch.no_grad()
    def answer_log_likelihoods(self, batch: Batch, answers: list[str]) -> torch.Tensor:
        """Log-likelihood of each answer text (and the end of text) for each sample.

        Rank classification, as lm-eval-harness scores multiple choice: the end
        token is scored too, so a label that is a prefix of another ("walking",
        "walking upstairs") is not favoured for being short.

        Returns
        -------
        torch.Tensor
            ``(B, K)``: the summed token log-probabilities of answer ``k`` for sample ``b``.
        """
        _, z = self.represent(batch)
        tok, rows = self.tokenizer, len(batch.targets)
        out = []
        for answer in answers:
            ids = tok(" " + answer + tok.eos_token, add_special_tokens=False).input_ids
            target = torch.tensor(ids, device=self.device).expand(rows, -1)
            logits, _ = self.target_logits(replace(batch, target_ids=target), z)
            logp = torch.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            out.append(logp.sum(1))
        return torch.stack(out, 1)

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int) -> list[str]:
        """Greedy generation from ``[soft | prompt]``; returns stripped texts."""
        _, z = self.represent(batch)
        prefix = self._prefix(z)
        attn = torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device)
        tok = self.tokenizer
        with self.precision():
            out = self.lm.generate(
                inputs_embeds=prefix,
                attention_mask=attn,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]
