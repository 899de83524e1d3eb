"""Attacks on watermarked weights: one file each, all implementing `attacks.base.Attack`."""
