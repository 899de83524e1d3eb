"""The Frechet distance against clean-fid's reference implementation (scipy sqrtm), both sides of n vs d."""
import numpy as np
import pytest
from cleanfid.fid import frechet_distance

from bench.metrics import inception


@pytest.mark.parametrize("n_gen", [12, 40, 300])  # fewer, about as many and more samples than dimensions
def test_fid_matches_clean_fid(n_gen):
    rng = np.random.default_rng(n_gen)
    d = 32
    mix = rng.standard_normal((d, 8))
    real = rng.standard_normal((500, 8)) @ mix.T + 0.3 * rng.standard_normal((500, d))
    fake = 1.3 * rng.standard_normal((n_gen, 8)) @ mix.T + 0.5 * rng.standard_normal((n_gen, d)) + 0.2
    ref = inception.stats(real)
    expected = frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), *ref)
    got = inception.fid(fake, ref)
    assert got == pytest.approx(expected, rel=1e-6)
    assert inception.fid(real, ref) == pytest.approx(0.0, abs=1e-6)  # a set against its own statistics


def test_fid_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        inception.fid(np.zeros((1, 4)), (np.zeros(4), np.eye(4)))
