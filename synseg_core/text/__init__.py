"""Text side: prompt templates, embedding cache, categories from captions."""
