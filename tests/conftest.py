import pytest
import torch

import scoresde as sd


@pytest.fixture(autouse=True)
def _float32_default():
    torch.set_default_dtype(torch.float32)
    yield


ALL_SDES = {
    "vp_linear": lambda: sd.VPSDE(sd.LinearSchedule()),
    "vp_cosine": lambda: sd.VPSDE(sd.CosineSchedule()),
    "vp_discrete": lambda: sd.VPSDE(sd.DiscreteSchedule.linear()),
    "subvp": lambda: sd.SubVPSDE(sd.LinearSchedule()),
    "ve": lambda: sd.VESDE(),
}


@pytest.fixture(params=sorted(ALL_SDES))
def any_sde(request):
    return ALL_SDES[request.param]()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
