"""A deliberately broken user model: its output has the wrong shape."""


def build():
    return {"net": lambda x, t: x[:, :1], "shape": (3,)}
