"""``medclip serve``: a local web app over a case index (see :mod:`medclip.serve.app`)."""
