"""Small parameters for every registered method, shared by the distributed tests and
``benchmarks/distributed.py`` (no TensorFlow here: importing it starts nothing)."""

PARAMS = {
    "wff": {"interval": 1},
    "l1": {"ratio": 0.5},
    "random": {"ratio": 0.5},
    "latent": {"level": "channel", "budget": 0.7, "grid": [0.25, 0.5], "eval_samples": 64},
    "sbnn": {"ec": 0.25, "gamma": 0.1},
    "etb": {"ratio": 0.3, "control_every": 2, "epochs": 2},
    "cbnn": {"slices": [4, 5, 6, 7]},
}
