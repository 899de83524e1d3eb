"""Benchmark harness for model watermarks of text-to-image diffusion models under fine-tuning attacks."""
