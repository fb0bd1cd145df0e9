"""The pattern library's search: MiniLM embeddings, a tantivy keyword index, fusion.

Heavy parts (torch, sentence-transformers, tantivy, LanceDB) are imported by the
modules that need them, never here, so ``import aqe.search`` stays cheap.
"""
