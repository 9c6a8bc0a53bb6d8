"""Base models: the encoder classifiers (:mod:`.encoder`), causal LMs (:mod:`.causal`) and the device."""
