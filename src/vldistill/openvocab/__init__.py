"""Open-vocabulary distillation (seed 004, KDEOV): a light image encoder learns a frozen text
encoder's space from a CLIP-style teacher; zero-shot classification and retrieval.

    text.py     frozen text encoders (MiniLM; CLIP / SigLIP text towers)
    models.py   image encoders: built-in CNN, transformers MobileNetV2 / EfficientNet,
                CLIP / SigLIP image towers; projection; FiLM and cross-attention fusion
    losses.py   contrastive, cosine / L2 distillation, affinity
    metrics.py  zero-shot top-k, chunked retrieval recall
    data.py     ShapesWorld single objects (held-out combinations), JSONL captions, folders
    job.py      the recipe (task: open_vocab), training, evaluation, checkpoints
"""
