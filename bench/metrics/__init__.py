"""Metric collectors: one file each, all implementing `bench.metrics.base.Collector`."""
