"""Data recipes: scripts that write training shards in the project's standard layout.

Every recipe writes webdataset tar shards whose samples are ``{key}.mp4`` (H.264
clip), ``{key}.txt`` (caption) and ``{key}.json`` (metadata; at least ``fps``),
plus an ``index.json`` next to the shards.  Read them back with
:class:`t2vturbo.data.shards.ClipStream`.

* :mod:`data_recipes.toy_world` -- procedural toy clips (``python -m data_recipes.toy_world``).
"""
