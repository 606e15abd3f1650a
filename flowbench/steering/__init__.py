"""Reward alignment through the flow map (seed 003, sections 7 to 9), scored against an exact target.

rewards   REWARDS registry; the topic reward log p(topic = k | x) by soft-emission forward pass
target    the exact tilted target rho ∝ exp(lambda r) p: its NLL, topic shares, the scores
guidance  look-ahead steering, the tangent-only baseline, best-of-N
finetune  reward fine-tuning through the look-ahead with a KL to the base
config    the `steering:` section of a suite
run       the conductor behind `python -m flowbench steer SUITE.yaml`
"""
