"""backchannel: an OpenID Connect CIBA authorization server (``backchannel.app.create_app``).

A regular package (not a namespace one), so that :mod:`importlib.resources`
finds the files it ships (:mod:`backchannel.bundled`) on the file system.
"""
