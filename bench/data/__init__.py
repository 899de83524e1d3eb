"""Captioned image datasets: one loader per published layout, all yielding (image, caption)."""
