"""Open-vocabulary distillation (``job: open_vocab``): a light image encoder learns a frozen
text encoder's space from a teacher; zero-shot classification and retrieval."""
