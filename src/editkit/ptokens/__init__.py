"""Persuasion tokens: m begin / m end tokens whose input embeddings are the only trained weights."""
from .config import DEFAULT_M, BaseModelFingerprint, PTokenConfig, fingerprint
from .layer import PTokenEmbedding
from .model import DEFAULT_INIT_TEXT, PTokens, warn_untrained

__all__ = [
    "DEFAULT_INIT_TEXT",
    "DEFAULT_M",
    "BaseModelFingerprint",
    "PTokenConfig",
    "PTokenEmbedding",
    "PTokens",
    "fingerprint",
    "warn_untrained",
]
