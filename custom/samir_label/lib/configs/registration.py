"""Settings of the SAMIR MONAI Label app, read from ``monailabel start_server --conf KEY VALUE``.

Keys (all optional):

* ``preset``: cardiac (default) | abdomen | generic | auto: preprocessing and default weights (``samir.presets``);
* ``weights``: a SAMIR ``model.pt`` (its sidecar ``model.json`` holds the network's arguments); default:
  the app's fine-tuned ``model/samir_finetuned.pt`` when the train task has written one, else the preset's
  weights in ``bundle/models``;
* ``encoder`` / ``checkpoint``: override the SAM encoder name and its weights file;
* ``device``: cpu | cuda | cuda:1 ... (default: cuda when available);
* ``cache_dir``: embedding cache folder, or ``false`` for none (default: samir's default cache;
  ``samir.encoders.cache.parse_cache_option``);
* ``optimize``: true to refine every registration by instance optimisation (``samir.optimize``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RegistrationConfig", "FINETUNED_NAME"]

FINETUNED_NAME = "samir_finetuned.pt"
_TRUE = ("1", "true", "yes", "on")


@dataclass
class RegistrationConfig:
    """Everything the infer and train tasks need, from the app dir, the studies folder and ``--conf``."""

    app_dir: Path
    studies: Path
    preset: str = "cardiac"
    weights: str | None = None
    encoder: str | None = None
    checkpoint: str | None = None
    device: str | None = None
    cache_dir: str | bool | None = None
    optimize: bool = False

    @classmethod
    def from_conf(cls, app_dir: str, studies: str, conf: dict[str, str]) -> RegistrationConfig:
        from samir.encoders.cache import parse_cache_option
        from samir.presets import check_preset

        conf = dict(conf or {})
        preset = check_preset(conf.get("preset", "cardiac"), option="--conf preset")
        weights = conf.get("weights") or None
        if weights is not None and not Path(weights).expanduser().is_file():
            raise FileNotFoundError(f"--conf weights: {weights} is not a file (a SAMIR model.pt with its model.json)")
        cache = parse_cache_option(conf["cache_dir"]) if "cache_dir" in conf else None
        return cls(
            app_dir=Path(app_dir).resolve(), studies=Path(studies).resolve(), preset=preset,
            weights=str(Path(weights).expanduser().resolve()) if weights else None,
            encoder=conf.get("encoder") or None, checkpoint=conf.get("checkpoint") or None,
            device=conf.get("device") or None, cache_dir=cache,
            optimize=str(conf.get("optimize", "true")).lower() in _TRUE,
        )

    @property
    def model_dir(self) -> Path:
        """The app's model folder (``monailabel start_server`` creates it); the train task writes here."""
        return self.app_dir / "model"

    @property
    def finetuned(self) -> Path:
        return self.model_dir / FINETUNED_NAME

    @property
    def outputs_dir(self) -> Path:
        """Registrations are saved under ``<studies>/.samir/registrations``: inside the studies folder,
        outside ``labels/`` and not at its top (so the datastore never lists them as images)."""
        return self.studies / ".samir" / "registrations"

    def active_weights(self) -> str | None:
        """The weights file to use now: ``--conf weights``, else the fine-tuned model, else None (preset's)."""
        if self.weights:
            return self.weights
        if self.finetuned.is_file():
            return str(self.finetuned)
        return None

    def default_weights_path(self) -> Path:
        """Where the preset's weights are expected when no other file is configured."""
        from samir.presets import preset_weights

        return preset_weights(self.preset)

    def registrar_kwargs(self) -> dict:
        return dict(preset=self.preset, encoder=self.encoder, checkpoint=self.checkpoint,
                    weights=self.active_weights(), device=self.device, cache_dir=self.cache_dir,
                    optimize=self.optimize)

    def network_arguments(self) -> dict:
        """The network's arguments (sidecar ``"network"``) of the active weights, for the fine-tuned copy."""
        from samir.model_files import network_arguments_of

        return network_arguments_of(self.active_weights() or self.default_weights_path())

    def describe(self) -> str:
        w = self.active_weights() or f"{self.default_weights_path()} (preset default)"
        exists = "" if os.path.isfile(w.split(" ")[0]) else " [missing]"
        return f"preset {self.preset}, weights {w}{exists}, encoder {self.encoder or 'from weights'}"
