"""BERT: a bidirectional Transformer encoder pre-trained by masked language modelling and next-sentence prediction.

Devlin et al., 2019; Notes: 004 BERT (Training / Fine-tuning), 000 §5.3 remark (encoder-only), 003 §9.3.
The input embedding is the sum of token, segment (sentence A/B) and learned position embeddings, followed
by LayerNorm and dropout; a post-norm encoder (GELU FFN, 4x wide) reads the whole sequence at once (no
causal mask: "bidirectional"). Two heads pre-train it: MLM predicts masked tokens through a transform
(dense + GELU + LayerNorm) and a decoder tied to the token embedding (plus its own bias); NSP classifies the
pooled [CLS] state, pooled = tanh(W h_[CLS] + b), as "B follows A" or not. Fine-tuning adds a new output
layer on the pooled state (004 Fine-tuning BERT).

Masking (15% rule): 15% of the non-special tokens are chosen; of these 80% become [MASK], 10% a random token,
10% stay; the loss covers the chosen positions only. The notes give the 15% (004); the 80/10/10 split is
the paper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.positional import LearnedPositionalEmbedding
from ...nn.transformer import TransformerEncoder
from ...registry import register_model

IGNORE_INDEX = -100


class BertEmbeddings(nn.Module):
    """Input embedding LN(E_tok[x] + E_seg[s] + P[pos]), then dropout. Notes: 004 BERT."""

    def __init__(self, vocab_size: int, hidden: int, max_position: int, type_vocab_size: int, dropout: float,
                 eps: float = 1e-12):
        super().__init__()
        self.word = nn.Embedding(vocab_size, hidden)
        self.position = LearnedPositionalEmbedding(max_position, hidden)
        self.token_type = nn.Embedding(type_vocab_size, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.position(self.word(input_ids) + self.token_type(token_type_ids))
        return self.dropout(self.norm(x))


class BertModel(nn.Module):
    """BERT body: embeddings, L post-norm encoder layers (GELU), pooler tanh(W h_0 + b). Notes: 004 BERT.

    forward(input_ids [B, T], token_type_ids [B, T] (0 = sentence A, 1 = B), key_padding_mask [B, T] True at
    padding; by default input_ids == pad_id) -> (sequence states [B, T, H], pooled [CLS] state [B, H]).
    """

    def __init__(self, vocab_size: int = 30522, hidden: int = 768, num_layers: int = 12, num_heads: int = 12,
                 intermediate: int | None = None, max_position: int = 512, type_vocab_size: int = 2,
                 dropout: float = 0.1, layer_norm_eps: float = 1e-12, pad_id: int | None = 0):
        super().__init__()
        self.vocab_size, self.hidden, self.pad_id = vocab_size, hidden, pad_id
        self.embeddings = BertEmbeddings(vocab_size, hidden, max_position, type_vocab_size, dropout, layer_norm_eps)
        self.encoder = TransformerEncoder(num_layers, hidden, num_heads, d_ff=intermediate or 4 * hidden,
                                          dropout=dropout, activation="gelu", norm_first=False,
                                          layer_norm_eps=layer_norm_eps)
        self.pooler = nn.Linear(hidden, hidden)
        bert_init(self)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
            raise ConfigError(f"BERT expects integer token ids [B, T]; got {input_ids.dtype} {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.embeddings.position.max_len:
            raise ConfigError(f"BERT holds {self.embeddings.position.max_len} positions; got T = {input_ids.shape[1]}")
        if key_padding_mask is None and self.pad_id is not None:
            key_padding_mask = input_ids == self.pad_id
        h = self.encoder(self.embeddings(input_ids, token_type_ids), key_padding_mask=key_padding_mask)
        return h, torch.tanh(self.pooler(h[:, 0]))


@torch.no_grad()
def bert_init(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation: N(0, 0.02) for every Linear and Embedding weight (and positions), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, LearnedPositionalEmbedding):
            nn.init.normal_(m.weight, std=std)


class BertMLMHead(nn.Module):
    """MLM head: logits = LN(gelu(W h + b)) E_tok^T + b_vocab, decoder tied to the token embedding."""

    def __init__(self, hidden: int, word_embedding: nn.Embedding, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.decoder = nn.Linear(hidden, word_embedding.num_embeddings)
        self.decoder.weight = word_embedding.weight

    def forward(self, h: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.dense(h))))


class BertForPreTraining(nn.Module):
    """BERT with its pre-training heads: MLM logits [B, T, V] and NSP logits [B, 2]. Notes: 004 Training BERT."""

    def __init__(self, **bert_kw):
        super().__init__()
        self.bert = BertModel(**bert_kw)
        self.mlm = BertMLMHead(self.bert.hidden, self.bert.embeddings.word)
        self.nsp = nn.Linear(self.bert.hidden, 2)
        bert_init(self.mlm.dense)
        bert_init(self.nsp)
        nn.init.zeros_(self.mlm.decoder.bias)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                key_padding_mask: Tensor | None = None, masked: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(MLM logits [B, T, V], NSP logits [B, 2]); given `masked` (bool [B, T]), the MLM logits of the masked
        positions only, [M, V] in row-major order: the loss covers nothing else, so most of the head's work is
        saved."""
        h, pooled = self.bert(input_ids, token_type_ids, key_padding_mask)
        return self.mlm(h if masked is None else h[masked]), self.nsp(pooled)

    def loss(self, input_ids: Tensor, mlm_labels: Tensor, nsp_labels: Tensor | None = None,
             token_type_ids: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        """Cross-entropy on the masked positions (labels -100 elsewhere) plus, when given, the NSP cross-entropy."""
        mlm_logits, nsp_logits = self(input_ids, token_type_ids, key_padding_mask)
        loss = F.cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]), mlm_labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        return loss if nsp_labels is None else loss + F.cross_entropy(nsp_logits, nsp_labels)


class BertForSequenceClassification(nn.Module):
    """BERT fine-tuning for classification: logits = W dropout(pooled) + b. Notes: 004 Fine-tuning BERT.

    `from_pretrained_body(bert, num_labels)` reuses a (pre-trained) `BertModel`; only the new layer is fresh.
    """

    def __init__(self, num_labels: int = 2, dropout: float = 0.1, bert: BertModel | None = None, **bert_kw):
        super().__init__()
        self.bert = bert if bert is not None else BertModel(dropout=dropout, **bert_kw)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.bert.hidden, num_labels)
        bert_init(self.classifier)

    @classmethod
    def from_pretrained_body(cls, bert: BertModel, num_labels: int, dropout: float = 0.1):
        """A classifier sharing the given (pre-trained) body, with a fresh output layer of `num_labels` logits."""
        return cls(num_labels, dropout, bert=bert)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> Tensor:
        _, pooled = self.bert(input_ids, token_type_ids, key_padding_mask)
        return self.classifier(self.dropout(pooled))


def mask_tokens(input_ids: Tensor, vocab_size: int, mask_id: int, special_ids: list[int] | tuple[int, ...],
                mlm_prob: float = 0.15, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT's masking: (corrupted inputs, labels). Notes: 004 Training BERT (15%); 80/10/10 from the paper.

    Each non-special token is chosen with probability `mlm_prob`; a chosen token becomes [MASK] with p 0.8, a
    uniformly random non-special token with p 0.1, and stays with p 0.1. labels hold the original id at chosen
    positions and -100 (ignored by the loss) elsewhere. Special tokens ([CLS], [SEP], [PAD], ...) are never chosen.
    """
    if not 0 < mlm_prob < 1:
        raise ConfigError(f"mlm_prob must lie in (0, 1); got {mlm_prob}")
    dev = input_ids.device
    special_t = torch.as_tensor(list(special_ids), dtype=input_ids.dtype, device=dev)
    special = torch.isin(input_ids, special_t)
    prob = torch.full(input_ids.shape, mlm_prob, device=dev).masked_fill(special, 0.0)
    chosen = torch.bernoulli(prob, generator=generator).bool()
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    u = torch.rand(input_ids.shape, generator=generator, device=dev)
    allowed = torch.arange(vocab_size, device=dev)
    allowed = allowed[~torch.isin(allowed, special_t)]
    random_tokens = allowed[torch.randint(len(allowed), input_ids.shape, generator=generator, device=dev)]
    corrupted = torch.where(chosen & (u < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    corrupted = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_tokens.to(input_ids.dtype), corrupted)
    return corrupted, labels


# Parameter counts (H hidden, V vocab, P positions, L layers), the same layout as Hugging Face's BertModel:
#   embeddings  V H + P H + 2 H + 2 H (LN)                  base: 23,440,896 + 393,216 + 1,536 + 1,536 = 23,837,184
#   each layer  4 (H^2 + H) attention + 2 H LN + (H 4H + 4H) + (4H H + H) FFN + 2 H LN = 12 H^2 + 13 H
#                                                           base: 7,087,872, x 12 = 85,054,464
#   pooler      H^2 + H                                     base: 590,592
#   BertModel base = 23,837,184 + 85,054,464 + 590,592 = 109,482,240
#   heads       MLM transform H^2 + H + 2 H, decoder bias V (weight tied), NSP 2 H + 2
#                                                           base: 590,592 + 1,536 + 30,522 + 1,538 = 624,188
#   BertForPreTraining base = 109,482,240 + 624,188 = 110,106,428
#   large (H 1024, L 24): body 335,141,888, with heads 336,226,108; tiny (H 128, L 2): body 4,385,920.


@register_model(task="masked_lm", num_params=110_106_428, params_source="Hugging Face BertForPreTraining")
def bert_base(**kw) -> BertForPreTraining:
    """BERT-base with MLM and NSP heads: L 12, H 768, A 12, vocab 30522, 512 positions: 110,106,428 parameters.

    Notes: 004 BERT.
    """
    return BertForPreTraining(**kw)


@register_model(task="masked_lm", num_params=336_226_108, params_source="Hugging Face BertForPreTraining")
def bert_large(**kw) -> BertForPreTraining:
    """BERT-large with MLM and NSP heads: L 24, H 1024, A 16: 336,226,108 parameters. Notes: 004 BERT."""
    return BertForPreTraining(**{"hidden": 1024, "num_layers": 24, "num_heads": 16, **kw})


@register_model(task="masked_lm")
def bert_tiny(**kw) -> BertForPreTraining:
    """BERT-tiny (Turc et al., 2019) with heads: L 2, H 128, A 2; the body has 4,385,920 parameters. Notes: 004 BERT."""
    return BertForPreTraining(**{"hidden": 128, "num_layers": 2, "num_heads": 2, **kw})
