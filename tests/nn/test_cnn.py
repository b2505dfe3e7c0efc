import torch
from torchvision.models import resnet18

from bigmodel.nn import ResNet18, SmallCNN, num_parameters


def test_small_cnn_shapes_and_backward():
    net = SmallCNN(10, in_channels=1, image_size=28)
    logits = net(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert SmallCNN(10, image_size=8)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_resnet18_is_torchvisions_with_a_32px_stem():
    assert num_parameters(ResNet18(1000, small_input=False)) == num_parameters(resnet18()) == 11_689_512
    assert ResNet18(1000, small_input=False).state_dict().keys() == resnet18().state_dict().keys()
    net = ResNet18(10).eval()
    assert net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)
    features = {}
    net.layer4.register_forward_hook(lambda m, i, o: features.setdefault("map", o))
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert features["map"].shape[-2:] == (4, 4)  # not 1x1 as with the ImageNet stem
    assert ResNet18(10, in_channels=1)(torch.randn(2, 1, 28, 28)).shape == (2, 10)
