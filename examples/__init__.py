"""Example applications built on backchannel's relying-party library (``backchannel.rp``)."""
