"""The SynSeg network: frozen CLIP encoders, FiLM, decoder, and the FSS projector."""
from synseg_core.model.decoder import Decoder, DecoderOutput
from synseg_core.model.encoders import ImageEncoder, ImageFeatures, TextEncoder
from synseg_core.model.film import FiLM
from synseg_core.model.fss import Projector, SynergyFeatures, synergy_features
from synseg_core.model.synseg import SynSeg, create_model

__all__ = [
    "Decoder", "DecoderOutput", "FiLM", "ImageEncoder", "ImageFeatures", "Projector", "SynSeg",
    "SynergyFeatures", "TextEncoder", "create_model", "synergy_features",
]
