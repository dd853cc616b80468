"""Layer 4, methods for any data: fine-tuning strategies, autoencoders, label-budget
studies, choosing on validation. Imports only from the layers below."""
