"""Development-only tools: the fake WeCom, the ``wecom-bus dev`` supervisor, stand-ins for tests.

Never part of the production image or of ``pip install wecom-bus``; ``make install`` adds it.
"""
