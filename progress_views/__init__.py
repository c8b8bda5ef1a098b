"""The views of progress_viewer.py, one module per view, over one data layer.

data.py reads everything (catalog, users.csv, histories, the names check) behind a small
documented interface; model.py holds the pure computations (state at a moment, heatmap,
progress, who is stuck, idle, working or finished); notebook.py reads and renders one
copied notebook. The views: moment.py (the moment M every view shows), problems.py (the
first screen: class status, stuck and idle table, heatmap, progress), version.py (one
student's versions) and activity.py (every notebook, every version). Each view module
has make_section() and register(app, data); widgets.py holds the page-wide ids, the
input boxes and the checks of what a browser sends; access.py guards every route.
progress_viewer.py is the entry point: settings, access, page assembly, command line.
"""
