"""Published BNN pruning methods, one module each; they only score and choose.

- :mod:`bnnprune_tf.methods.flip_frequency`: weight flipping frequency (Li & Ren, ISQED 2020).
- :mod:`bnnprune_tf.methods.latent_weight`: latent-weight magnitude with layer sensitivity (ASPDAC 2023).
"""
