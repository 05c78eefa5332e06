"""NExT-GPT's decoder side: diffusion decoders and the caption embeddings their output projectors learn."""
