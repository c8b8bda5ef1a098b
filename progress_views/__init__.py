"""The teacher views of progress_viewer.py, one module per view.

model.py holds the pure computations (state at a moment, heatmap, progress series,
stuck and idle students); notebook.py reads and renders one copied notebook. Each view
module makes its part of the page and registers its callbacks; progress_viewer.py stays
the entry point and the owner of settings, shared controls and layout.
"""
