import pytest
import torch

from modelprint import nets
from modelprint.errors import ConfigError


@pytest.mark.parametrize("arch", nets.names())
@pytest.mark.parametrize("shape,classes", [((1, 8, 8), 10), ((1, 40), 10), ((3, 32, 32), 7), ((13,), 2)])
def test_every_net_fits_every_shape(arch, shape, classes):
    net = nets.make_net(arch, shape, classes)
    assert net(torch.randn(3, *shape)).shape == (3, classes)
    again = nets.rebuild(net.mp_config)
    assert [p.shape for p in again.parameters()] == [p.shape for p in net.parameters()]


def test_width_option_and_errors():
    small, wide = nets.make_net("cnn", (1, 8, 8), 10, width=8), nets.make_net("cnn", (1, 8, 8), 10, width=64)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in wide.parameters())
    assert small.mp_config["width"] == 8
    with pytest.raises(ConfigError, match="unknown architecture 'vgg'"):
        nets.make_net("vgg", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="num_classes"):
        nets.make_net("mlp", (4,), 1)
    with pytest.raises(ConfigError, match="cnn takes vectors, signals"):
        nets.make_net("cnn", (1, 4, 4, 4), 3)
