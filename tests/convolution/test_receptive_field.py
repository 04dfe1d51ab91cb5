import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.convolution.receptive_field import gradient_support, input_gradient, receptive_field


@pytest.mark.parametrize(
    "layers, expected",
    [
        (((3, 1, 1),), 3),
        (((3, 1, 1),) * 3, 7),
        (((5, 1, 1), (3, 1, 1)), 7),
        (((3, 2, 1), (3, 2, 1), (3, 1, 1)), 1 + 2 + 2 * 2 + 2 * 4),
        (((3, 1, 1), (3, 1, 2), (3, 1, 4)), 1 + 2 + 4 + 8),  # dilations 1, 2, 4
        (((2, 2, 1), (2, 2, 1), (5, 1, 1)), 1 + 1 + 2 + 4 * 4),
    ],
)
def test_formula_by_hand_and_gradient_support(layers, expected):
    r = receptive_field(layers)
    assert r == expected
    assert gradient_support(layers, size=r + 4) == (r, r)


def test_gradient_support_is_centred_and_the_effective_field_peaks_in_the_middle():
    layers = ((3, 1, 1),) * 4
    g = np.asarray(input_gradient(layers, 13))
    nz = np.argwhere(g > 0)
    assert nz.min(axis=0).tolist() == [2, 2] and nz.max(axis=0).tolist() == [10, 10]  # 9 x 9 around 6
    assert g[6, 6] == g.max() and g[6, 6] > 10 * g[2, 2]


def test_bad_layers_raise():
    with pytest.raises(ValueError, match=r"\(kernel, stride, dilation\) tuple of positive ints"):
        receptive_field(((3, 0, 1),))
    with pytest.raises(ValueError, match=r"\(kernel, stride, dilation\)"):
        receptive_field(((3, 1),))
