"""A TopK sparse autoencoder over one hook point, in SAELens's format.

The SAE reads an activation x (a residual-stream vector at one layer) as

    f = TopK(ReLU((x - b_dec) W_enc + b_enc))      [d_sae], at most k non-zero
    x_hat = f W_dec + b_dec                          [d_in]

(Gao et al. 2024, "Scaling and evaluating sparse autoencoders"; SAELens's `TopKSAE` with
`apply_b_dec_to_input`). Its folder holds SAELens's two files, `cfg.json` and
`sae_weights.safetensors` (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec), so
`sae_lens.SAE.load_from_disk(folder)` loads it; the workbench's own facts (the model's
identity, the layer, the training report) ride in the config's `metadata`, which SAELens
keeps as it finds it.

    >>> sae = SparseAutoencoder(d_in=576, d_sae=4608, k=32)        # doctest: +SKIP
    >>> sae.save("saes/l15", SAEInfo(model=lm.identity.to_dict(), layer=15))
    >>> sae, info = load_sae("saes/l15")
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError

CONFIG_FILE = "cfg.json"  # SAELens's names
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT_VERSION = "6.0.0"  # the SAELens config format written (6.x: `architecture`, `metadata`)
ARCHITECTURES = ("topk",)


@dataclass
class SAEInfo:
    """What an SAE was trained on and how well it does (its config's `metadata`).

    `model` is the identity of the model whose activations it read (`ModelIdentity.to_dict`),
    `layer` the resid layer (0 = embeddings), `hook_name` that point's TransformerLens name.
    """

    model: dict[str, Any]
    layer: int
    hook_name: str = ""
    context_size: int = 0  # the longest text read, in tokens
    dataset: str = ""  # where the activations came from: runs or a file
    report: dict[str, Any] = field(default_factory=dict)  # FVU, L0, dead, spliced loss

    def metadata(self) -> dict[str, Any]:
        """SAELens's metadata keys, with the workbench's beside them."""
        return {
            "sae_lens_version": FORMAT_VERSION,
            "sae_lens_training_version": FORMAT_VERSION,
            "model_name": self.model.get("base", ""),
            "hook_name": self.hook_name,
            "hook_head_index": None,
            "prepend_bos": False,
            "context_size": self.context_size,
            "dataset_path": self.dataset,
            "workbench": asdict(self),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> SAEInfo:
        own = metadata.get("workbench")
        if not isinstance(own, dict):
            raise WorkbenchError("the SAE's config has no workbench metadata (which model?)")
        return cls(**{k: own[k] for k in cls.__dataclass_fields__ if k in own})


class SparseAutoencoder(torch.nn.Module):
    """TopK SAE: `encode` gives at most `k` non-negative features per activation."""

    def __init__(self, d_in: int, d_sae: int, k: int, seed: int = 0) -> None:
        super().__init__()
        if not 1 <= k <= d_sae:
            raise WorkbenchError(f"k must be between 1 and the width {d_sae}, not {k}")
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        gen = torch.Generator().manual_seed(seed)
        # Decoder rows of unit norm; the encoder starts as the decoder's transpose, which
        # makes the first reconstructions sensible (Gao et al. 2024, section 2.4).
        w_dec = torch.randn(d_sae, d_in, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w_dec)
        self.W_enc = torch.nn.Parameter(w_dec.t().clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> [..., d_sae] with the k largest (ReLU'd) pre-activations kept."""
        pre = self.pre_activations(x)
        values, indices = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, features)."""
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale each decoder row to unit norm (and its encoder column and bias with it,
        so that the SAE computes the same function)."""
        norms = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_dec /= norms[:, None]
        self.W_enc *= norms[None, :]
        self.b_enc *= norms

    # -- SAELens's format ------------------------------------------------------------------

    def config(self, info: SAEInfo) -> dict[str, Any]:
        return {
            "architecture": "topk",
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "k": self.k,
            "rescale_acts_by_decoder_norm": False,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": info.metadata(),
        }

    def save(self, folder: str | Path, info: SAEInfo) -> Path:
        """Write `cfg.json` and `sae_weights.safetensors` into `folder` (created), each
        through a temporary file, so a failure leaves no half-written SAE."""
        from safetensors.torch import save_file

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_file(weights, str(tmp))
        tmp.replace(path / WEIGHTS_FILE)
        tmp = path / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(self.config(info), indent=1))
        tmp.replace(path / CONFIG_FILE)
        return path


def load_sae(folder: str | Path) -> tuple[SparseAutoencoder, SAEInfo]:
    """An SAE saved by `SparseAutoencoder.save` (or by SAELens, with the workbench's
    metadata), or one line saying what is missing or not supported."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    for need in (config_file, weights_file):
        if not need.is_file():
            raise WorkbenchError(f"{str(path)!r} is not an SAE folder: it has no {need.name}")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkbenchError(f"cannot read {config_file}: {exc}") from None
    architecture = config.get("architecture")
    if architecture not in ARCHITECTURES:
        raise WorkbenchError(
            f"SAE {str(path)!r} is {architecture!r}; the workbench reads {', '.join(ARCHITECTURES)}"
        )
    info = SAEInfo.from_metadata(config.get("metadata") or {})
    try:
        weights = load_file(str(weights_file))
        sae = SparseAutoencoder(int(config["d_in"]), int(config["d_sae"]), int(config["k"]))
        sae.load_state_dict({k: weights[k].float() for k in ("W_enc", "b_enc", "W_dec", "b_dec")})
    except (KeyError, RuntimeError, ValueError, SafetensorError) as exc:
        raise WorkbenchError(
            f"SAE {str(path)!r} does not load: {str(exc).splitlines()[0]}"
        ) from None
    sae.eval()
    return sae, info


def check_sae_for(
    info: SAEInfo, sae: SparseAutoencoder, identity: dict[str, Any], width: int
) -> None:
    """Refuse an SAE read off another base model or another residual width (one line)."""
    base = info.model.get("base")
    if base != identity.get("base"):
        raise WorkbenchError(f"the SAE was trained on {base!r}, not on {identity.get('base')!r}")
    if sae.d_in != width:
        raise WorkbenchError(f"the SAE reads width {sae.d_in}; this model's stream is {width}")
