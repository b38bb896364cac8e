"""The studio's tabs, one module each: a build(...) that lays the tab out and registers its events, the
tab's handlers (each returning {component: update}), and on_model(pipe), the tab's updates for a model."""
