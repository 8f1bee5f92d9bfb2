"""Tools around the library: speed benchmark, accuracy table, demo, figures, bundle zip, encoder fidelity.

Nothing in the registration path imports from here; these are entry points for ``samir`` commands.
"""
