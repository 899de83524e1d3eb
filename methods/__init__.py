"""Watermarking methods: one file each, all implementing `methods.base.WatermarkMethod`."""
