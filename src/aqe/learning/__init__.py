"""Learning from test history: CI test prioritisation with RL policies and baselines.

Heavy parts (torch) are imported by the algorithm modules that need them, never here.
"""
