"""Prompt optimization under a call budget: candidate prompts (bootstrapped demos, proposed instructions,
strategy choice) raced on growing dev minibatches, the winner checked once on the untouched test split.

The data path: ``candidates`` (what a prompt program is) -> ``bootstrap`` (demos from correct traces) ->
``propose`` (instructions from a meta-prompt) -> ``racing`` (successive halving with paired tests) ->
``search`` (the whole search on train/dev) -> ``run`` (search, save, then the one held-out comparison) ->
``store`` (the saved result, reusable as ``strategy: optimized:<run-id>``). ``budget`` meters every model call
the search makes.
"""
