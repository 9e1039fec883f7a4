"""PocketSphinx, the bundled English recognizer: :mod:`.engine` (the engine, its decoder processes and
``load``), :mod:`.stream` (live streams), :mod:`.worker` (the decoder process).

Nothing is imported here: the decoder process runs ``python -m hearline.engines.pocketsphinx.worker``,
and importing the engine (PyAV, numpy, the pool's types) into every such process would only cost memory.
"""
