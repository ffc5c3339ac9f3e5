"""Losses as pure functions of scores and log-likelihoods (maths in each docstring)."""

from fedrag.losses.contrastive import info_nce
from fedrag.losses.lsr import lsr_loss
from fedrag.losses.nll import answer_nll
from fedrag.losses.rag import rag_sequence_nll, rag_token_nll

__all__ = ["answer_nll", "info_nce", "lsr_loss", "rag_sequence_nll", "rag_token_nll"]
