"""``MegaForImageClassification``: pixels as a sequence of real numbers (the LRA Image, Pathfinder
and Path-X models), through the same backbone and classifier as ``MegaForSequenceClassification``.

Checkpoint keys are those of ``MegaForSequenceClassification`` (``mega.*``, ``classifier.*``), so one
converted directory loads into either class.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_mega import MegaConfig
from .modeling_classification import build_sequence_head, key_mask_of, sequence_classification_loss
from .modeling_mega import MegaModel, MegaPreTrainedModel


def pixels_to_sequence(pixel_values: Tensor) -> Tensor:
    """(B, L), (B, H, W) or single-channel (B, 1, H, W) pixels -> (B, L) in row-major order, as the
    original LRA image tasks flatten their grayscale images."""
    if pixel_values.dim() == 4:
        if pixel_values.shape[1] != 1:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels; MEGA's real-number embedding reads one "
                "value per position: pass single-channel (batch, 1, height, width) or (batch, length) pixels"
            )
        pixel_values = pixel_values[:, 0]
    if pixel_values.dim() == 3:
        return pixel_values.flatten(1)
    if pixel_values.dim() == 2:
        return pixel_values
    raise ValueError(
        f"pixel_values must be (batch, length), (batch, height, width) or (batch, 1, height, width), got {tuple(pixel_values.shape)}"
    )


class MegaForImageClassification(MegaPreTrainedModel):
    """MEGA classifying images given as ``pixel_values`` (needs ``input_type='real_numbers'``)."""

    main_input_name = "pixel_values"

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        if config.input_type != "real_numbers":
            raise ValueError(
                f"MegaForImageClassification needs input_type='real_numbers' (pixels are real numbers), "
                f"got input_type={config.input_type!r}"
            )
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.classifier = build_sequence_head(config)
        self.post_init()

    def forward(
        self,
        pixel_values: Tensor | None = None,
        labels: Tensor | None = None,
        attention_mask: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pair_pixel_values: Tensor | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutput | tuple[Tensor, ...]:
        """``pixel_values`` as :func:`pixels_to_sequence` takes them; ``attention_mask`` (B, L) for
        images of different sizes padded to one length; ``pair_pixel_values`` for a dual-input head."""
        if pixel_values is None:
            raise ValueError("pass pixel_values")
        outputs = self._encode(
            None,
            attention_mask=attention_mask,
            token_type_ids=None,
            inputs_embeds=None,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            input_values=pixels_to_sequence(pixel_values),
            **kwargs,
        )
        pair = None
        if pair_pixel_values is not None or self.config.classifier_dual_input:
            if pair_pixel_values is None:
                raise ValueError("classifier_dual_input=True: pass the second image as pair_pixel_values")
            second = self._encode(
                None, attention_mask=None, token_type_ids=None, inputs_embeds=None, output_attentions=False,
                output_hidden_states=False, input_values=pixels_to_sequence(pair_pixel_values),
            )
            pair = (second.last_hidden_state, None)
        hidden = outputs.last_hidden_state
        if pair is not None or self.config.classifier_style == "lra":
            logits = self.classifier(hidden, key_mask_of(attention_mask, hidden), pair=pair)
        else:
            logits = self.classifier(hidden)
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
        return self._head_output(ImageClassifierOutput, outputs, return_dict, loss=loss, logits=logits)
