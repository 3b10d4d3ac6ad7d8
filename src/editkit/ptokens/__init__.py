"""Persuasion tokens: m begin / m end tokens whose input embeddings are the only trained weights."""
from .config import BaseModelFingerprint, PTokenConfig, fingerprint
from .layer import PTokenEmbedding
from .model import DEFAULT_INIT_TEXT, PTokens

__all__ = ["BaseModelFingerprint", "DEFAULT_INIT_TEXT", "PTokenConfig", "PTokenEmbedding",
           "PTokens", "fingerprint"]
