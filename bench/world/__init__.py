"""Worlds: a Stable-Diffusion-layout pipeline, a CLIP model for scoring, and the data around them."""
