"""Layer 4, text: review snippets, a pre-trained transformer (files, loading, encoding,
prompting, attention), text methods and fine-tuning, the stored grid. Imports only from the
layers below and methods."""
