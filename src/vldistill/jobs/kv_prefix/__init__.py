"""KV-prefix modulation (``job: kv_prefix``): a frozen base model, an expert's features as
key/value prefixes of its cross-attention."""
