"""Thin DVC entry points: load params → call unildiff → write outs."""
