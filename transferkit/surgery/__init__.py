"""Layer 2, model surgery: heads, layer groups, freezing, LoRA, a cached frozen bottom.
Imports only from `transferkit.foundations`."""
